"""The shop's order service: takes an order and has payment process it."""

from typing import Any

from _common import Handler, call, serve


class Order(Handler):
    def handle_request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method != "POST":
            return 200, {"service": "order", "caller": self.caller}
        payment = call("POST", "http://payment:8080/process", {"order": body, "amount": 42})
        return (200 if payment["status"] == 200 else 502), {
            "service": "order", "caller": self.caller, "payment": payment}


if __name__ == "__main__":
    serve(Order)
