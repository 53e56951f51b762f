"""The shop's payment service: POST /process charges an order."""

from typing import Any

from _common import Handler, serve


class Payment(Handler):
    def handle_request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/process":
            return 200, {"service": "payment", "status": "paid", "caller": self.caller}
        return 404, {"service": "payment", "error": f"no {method} {path}"}


if __name__ == "__main__":
    serve(Payment)
