"""Shared compile helpers: error locations, field allow-lists, durations, string/header matchers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError, Message

from hyphal.proxy.compile.types import CompileError
from hyphal.proxy.runtime.tables import HeaderMatcher, HeaderValue, StringKind, StringMatch

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Where:
    """Which resource is being compiled; builds CompileErrors that point into it."""

    type_url: str
    name: str

    def error(self, path: str, problem: str) -> CompileError:
        return CompileError(self.type_url, self.name, path, problem)

    def only(self, msg: Message, allowed: Iterable[str], path: str) -> None:
        """Refuse any set field of `msg` not in `allowed`: present-but-ignored is never silent."""
        ok = set(allowed)
        for fd, _ in msg.ListFields():
            if fd.name not in ok:
                raise self.error(join(path, fd.name), "not supported by the hyphal sidecar")

    def unpack(self, any_msg: any_pb2.Any, cls: type[M], path: str) -> M:
        out: M = cls()
        if not any_msg.type_url:
            return out
        want = cls.DESCRIPTOR.full_name
        got = any_msg.type_url.rpartition("/")[2]
        if got != want:
            raise self.error(path, f"expected a {want}, got {got}")
        try:
            any_msg.Unpack(out)
        except DecodeError as exc:
            raise self.error(path, f"cannot decode {want}: {exc}") from None
        return out


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def seconds(d: duration_pb2.Duration) -> float:
    return float(d.seconds + d.nanos / 1e9)


def fraction(p: percent_pb2.FractionalPercent) -> float:
    """A FractionalPercent as a fraction in [0, 1]."""
    denom = {
        percent_pb2.FractionalPercent.HUNDRED: 100,
        percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
        percent_pb2.FractionalPercent.MILLION: 1_000_000,
    }[p.denominator]
    return min(1.0, float(p.numerator) / denom)


def string_match(m: string_pb2.StringMatcher, where: Where, path: str) -> StringMatch:
    where.only(m, {"exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"}, path)
    kind = m.WhichOneof("match_pattern")
    try:
        if kind == "exact":
            return StringMatch(StringKind.EXACT, m.exact, m.ignore_case)
        if kind == "prefix":
            return StringMatch(StringKind.PREFIX, m.prefix, m.ignore_case)
        if kind == "suffix":
            return StringMatch(StringKind.SUFFIX, m.suffix, m.ignore_case)
        if kind == "contains":
            return StringMatch(StringKind.CONTAINS, m.contains, m.ignore_case)
        if kind == "safe_regex":
            return StringMatch(StringKind.REGEX, m.safe_regex.regex, m.ignore_case)
    except ValueError as exc:
        raise where.error(join(path, "safe_regex.regex"), str(exc)) from None
    raise where.error(path, "a string matcher needs exact, prefix, suffix, contains or safe_regex")


def header_matcher(h: rc.HeaderMatcher, where: Where, path: str) -> HeaderMatcher:
    where.only(
        h,
        {
            "name",
            "exact_match",
            "safe_regex_match",
            "present_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "string_match",
            "invert_match",
        },
        path,
    )
    name = h.name.lower()
    if not name:
        raise where.error(join(path, "name"), "a header matcher needs a name")
    kind = h.WhichOneof("header_match_specifier")
    try:
        if kind is None:
            return HeaderMatcher(name, None, h.invert_match, True)
        if kind == "present_match":
            return HeaderMatcher(name, None, h.invert_match, h.present_match)
        if kind == "string_match":
            sm = string_match(h.string_match, where, join(path, "string_match"))
            return HeaderMatcher(name, sm, h.invert_match)
        legacy = {
            "exact_match": StringKind.EXACT,
            "prefix_match": StringKind.PREFIX,
            "suffix_match": StringKind.SUFFIX,
            "contains_match": StringKind.CONTAINS,
        }
        if kind in legacy:
            return HeaderMatcher(name, StringMatch(legacy[kind], getattr(h, kind)), h.invert_match)
        if kind == "safe_regex_match":
            sm = StringMatch(StringKind.REGEX, h.safe_regex_match.regex)
            return HeaderMatcher(name, sm, h.invert_match)
    except ValueError as exc:
        raise where.error(path, str(exc)) from None
    raise where.error(join(path, kind), "not supported by the hyphal sidecar")


def headers_to_add(
    items: Iterable[base_pb2.HeaderValueOption], where: Where, path: str
) -> tuple[HeaderValue, ...]:
    out = []
    for i, opt in enumerate(items):
        p = f"{path}[{i}]"
        where.only(opt, {"header", "append", "append_action", "keep_empty_value"}, p)
        append = True
        if opt.HasField("append"):
            append = opt.append.value
        elif opt.append_action in (
            base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS,
        ):
            append = False
        elif opt.append_action == base_pb2.HeaderValueOption.ADD_IF_ABSENT:
            raise where.error(join(p, "append_action"), "ADD_IF_ABSENT is not supported")
        if not opt.header.key:
            raise where.error(join(p, "header.key"), "a header to add needs a key")
        out.append(HeaderValue(opt.header.key.lower(), opt.header.value, append))
    return tuple(out)


def lower_names(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(n.lower() for n in items)
