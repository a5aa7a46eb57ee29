"""Google Colab itself: sign-in, the control plane that hands out runtimes, and the runtime proxy.

``endpoints`` names the hosts, ``models`` the shapes of what the services answer, ``control`` the
``/tun/m`` control plane (assign, list, keep-alive, unassign) and ``public_api`` the v1beta API.
"""
