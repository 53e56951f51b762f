"""The shop's frontend: asks product and order by service name and returns a JSON summary."""

from typing import Any

from _common import Handler, call, serve


class Frontend(Handler):
    def handle_request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path.startswith("/health"):
            return 200, {"ok": True}
        product = call("GET", "http://product:8080/product/42")
        order = call("POST", "http://order:8080/order", {"product": 42, "quantity": 1})
        ok = product["status"] == 200 and order["status"] == 200
        return (200 if ok else 502), {
            "service": "frontend",
            "caller": self.caller,
            "product": product,
            "order": order,
        }


if __name__ == "__main__":
    serve(Frontend)
