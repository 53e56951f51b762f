"""The shop's product service; VERSION (v1 or v2) says which version answers."""

import os
from typing import Any

from _common import Handler, serve

VERSION = os.environ.get("VERSION", "v1")


class Product(Handler):
    def handle_request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        return 200, {"service": "product", "version": VERSION, "path": path,
                     "caller": self.caller}


if __name__ == "__main__":
    serve(Product)
