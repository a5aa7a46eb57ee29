"""The runtime as a workspace, in one file: install packages, pass a secret, sync a data folder,
run shell commands, train remotely with live progress while a dashboard on the runtime is
forwarded here (TensorBoard's place), and download what the training wrote.

Run: python examples/workspace.py
It uses backend="emulator": a Colab emulator on this machine, so no Google account is needed, and
the "runtime" is this machine. For real Colab, sign in once with `colabremote login --adc`
(docs/auth.md), use backend="colab", and name the packages your training needs in PACKAGES.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import colabremote as cr

#: The secret the training reads on the runtime. Export it in your shell, or store it once with
#: `colabremote secrets set EXAMPLE_API_TOKEN`; this example makes one up when neither is there.
SECRET = "EXAMPLE_API_TOKEN"
#: What the runtime must have. On Colab, name what its image lacks (["transformers==4.57.*"]);
#: here a package the emulator's runtime (this machine) already has, so the example runs offline.
PACKAGES = ["cloudpickle>=3"]
#: Plain settings for the runtime, as environment variables there.
SETTINGS = {"TRAINING_EPOCHS": "5"}
#: Where the training writes on the runtime (relative to its working directory, /content on
#: Colab) and where its outputs land here.
REMOTE_OUTPUTS = "outputs"
LOCAL_OUTPUTS = Path("outputs")
#: The training data here, and where it goes on the runtime (only changed files are sent).
LOCAL_DATA = Path("data")
REMOTE_DATA = "data"


def make_data() -> None:
    """A small local dataset, standing in for yours."""
    LOCAL_DATA.mkdir(exist_ok=True)
    rows = "".join(f"{i},{2 * i + 1}\n" for i in range(100))
    (LOCAL_DATA / "train.csv").write_text("x,y\n" + rows)


def serve_dashboard() -> int:
    """Runs on the runtime: a small web server over the outputs folder, standing in for
    TensorBoard (`tensorboard --logdir outputs --port 6006` on Colab). Returns its port."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    os.makedirs(REMOTE_OUTPUTS, exist_ok=True)
    handler = functools.partial(Quiet, directory=os.path.abspath(REMOTE_OUTPUTS))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def train() -> tuple[float, list[str]]:
    """Runs on the runtime: a stand-in training loop that prints its progress (shown here, live)
    and writes a metrics file and a "model" to the outputs folder. Returns the final loss and
    the names of the files written."""
    import math
    import time

    token = os.environ[SECRET]  # every backend: the secret is an environment variable
    try:
        from google.colab import userdata
    except ImportError:  # local and jupyter kernels have no google.colab
        pass
    else:
        assert userdata.get(SECRET) == token  # Colab's own secrets API answers too
    epochs = int(os.environ["TRAINING_EPOCHS"])
    with open(os.path.join(REMOTE_DATA, "train.csv")) as f:
        samples = len(f.readlines()) - 1
    print(f"  {samples} samples", flush=True)
    os.makedirs(REMOTE_OUTPUTS, exist_ok=True)
    losses = []
    loss = 1.0
    for epoch in range(1, epochs + 1):
        loss = loss * 0.6 + 0.02 * abs(math.sin(epoch))
        losses.append(round(loss, 4))
        print(f"  epoch {epoch}/{epochs}: loss {loss:.4f}", flush=True)
        time.sleep(0.2)  # the real work goes here
    with open(os.path.join(REMOTE_OUTPUTS, "metrics.json"), "w") as f:
        json.dump({"loss": losses, "signed_in": bool(token)}, f)
    with open(os.path.join(REMOTE_OUTPUTS, "model.txt"), "w") as f:
        f.write(f"weights after {epochs} epochs\n")
    return loss, sorted(os.listdir(REMOTE_OUTPUTS))


def main() -> None:
    os.environ.setdefault(SECRET, "made-up-token-for-the-example")
    with cr.Session(
        "emulator", gpu="T4", pip=PACKAGES, env=SETTINGS, secrets=[SECRET]
    ) as session:  # the packages are installed, the settings and the secret set, at open
        # Shell commands: their output streams here; the result has the status and the text.
        cpus = session.shell("nproc", check=True).stdout.strip()
        session.exec("!echo shell lines run as in a notebook cell: $TRAINING_EPOCHS epochs")

        make_data()
        synced = session.sync(LOCAL_DATA, REMOTE_DATA)  # again later: only what changed
        print(f"synced {len(synced.sent)} file(s), {synced.bytes} bytes, to the runtime")

        port = session.remote(serve_dashboard)()
        with session.forward(port) as url:  # http://127.0.0.1:<port> here -> the runtime's port
            print(f"training on the runtime ({cpus} CPUs), dashboard at {url}:")
            loss, names = session.remote(train)()
            print(f"final loss {loss:.4f}")
            with urllib.request.urlopen(f"{url}/metrics.json") as page:
                print(f"the dashboard shows {len(json.load(page)['loss'])} epochs")

        session.download(REMOTE_OUTPUTS, LOCAL_OUTPUTS)  # the whole folder
    print(f"downloaded to {LOCAL_OUTPUTS}/: {', '.join(names)}")
    metrics = json.loads((LOCAL_OUTPUTS / "metrics.json").read_text())
    print(f"losses by epoch: {metrics['loss']}")


if __name__ == "__main__":
    main()
