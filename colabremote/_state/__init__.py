"""State that lives on the kernel between calls: refs to kept values (``refs.py``) and remote
instances of classes (``classes.py``)."""
