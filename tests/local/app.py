"""A stand-in app for the supervisor tests: listens on $PORT, dumps its env, then obeys $MODE."""

import json
import os
import socket
import sys
import time

mode = os.environ.get("MODE", "serve")
out = os.environ.get("ENV_OUT")
if out:
    with open(out, "w") as f:
        json.dump(dict(os.environ), f)
if mode.startswith("exit"):
    time.sleep(0.1)
    sys.exit(int(mode[4:] or 0))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen()
if mode == "crash-later":
    time.sleep(0.3)
    sys.exit(1)
while True:
    time.sleep(1)
