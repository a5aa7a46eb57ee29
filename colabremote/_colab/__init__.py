"""Google Colab itself: sign-in, the control plane that hands out runtimes, and the runtime proxy.

``endpoints`` names the hosts, ``models`` the shapes of what the services answer, ``control`` the
``/tun/m`` control plane (assign, list, keep-alive, unassign), ``public_api`` the v1beta API,
``auth`` signing in to Google (a package split by concern) and ``tokens`` the stored sign-in.
"""
