"""Ozeki's commands over the call layer: their parameters, their handlers, and
what each one came to (code, log line, the console's command log).

Both ``/api`` and the web console run commands through :func:`execute` and
:func:`record`, so they check, answer and log alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from flask import Request, current_app, request

from gateway import ozml
from gateway.api.responses import element
from gateway.auth import COMMAND_NAMES, AddressPolicy, Lockout, Users
from gateway.calls import Call, Gateway
from gateway.codes import MESSAGES, Code
from gateway.commandlog import CommandLog, CommandRecord
from gateway.errors import Inappropriate, KeyStringError, describe, invalid
from gateway.keys import Flash, parse_keys
from gateway.lines.base import Party
from gateway.logs import escape
from gateway.notify import check_url
from gateway.tones import DURATION_MS, GAP_MS, Timing, TonePlan

log = logging.getLogger("gateway.api")

#: A Speak's text at most: about four minutes of speech.
MAX_SPEAK_CHARS = 4000


@dataclass
class ApiState:
    gateway: Gateway
    users: Users
    policy: AddressPolicy
    lockout: Lockout
    #: Recent commands of the API and the console (the console's log page).
    commands: CommandLog = field(default_factory=CommandLog)


def state() -> ApiState:
    api_state: ApiState = current_app.extensions["dtmf_api"]
    return api_state


class Params:
    """The request's parameters, by lower-cased name, from the query and the form
    of ``source`` (by default Flask's request), or from ``given``: the
    console's forms, mapped to API parameter names."""

    def __init__(self, given: Mapping[str, str] | None = None, *,
                 source: Request | None = None) -> None:
        self.values: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.repeated: set[str] = set()
        pairs: Iterable[tuple[str, str]]
        if given is not None:
            pairs = given.items()
        else:
            source = request if source is None else source
            sources = [source.args]
            if source.method == "POST":
                sources.append(source.form)
            pairs = [item for form in sources for item in form.items(multi=True)]
        for name, value in pairs:
            key = name.lower()
            if key in self.values and self.values[key] != value:
                self.repeated.add(key)
            self.values[key] = value
            self.names.setdefault(key, name)

    def exact(self, name: str, command: str) -> str | None:
        """The value as it was sent, not trimmed (a password is used exactly as given)."""
        key = name.lower()
        if key in self.repeated:
            raise invalid(name, command, "given more than once with different values")
        return self.values.get(key)

    def get(self, name: str, command: str, *, required: bool = False) -> str | None:
        value = self.exact(name, command)
        if value is not None:
            value = value.strip()
        if required and not value:
            raise invalid(name, command)
        return value or None

    def required(self, name: str, command: str) -> str:
        value = self.get(name, command, required=True)
        assert value is not None
        return value


# -- commands ---------------------------------------------------------------


def _ms(params: Params, name: str, command: str, default: int, bounds: tuple[int, int]) -> int:
    text = params.get(name, command)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise invalid(name, command, f"{text!r} is not a whole number of ms") from None
    if not bounds[0] <= value <= bounds[1]:
        raise invalid(name, command, f"{value} ms is outside {bounds[0]} to {bounds[1]} ms")
    return value


def send_dtmf(params: Params) -> tuple[str, Call]:
    command = "SendDTMF"
    gateway = state().gateway
    keys = params.required("Keys", command)
    try:
        symbols = parse_keys(keys)
    except KeyStringError as exc:
        raise invalid("Keys", command, str(exc)) from None
    try:
        party = Party.parse(params.required("Party", command))
    except ValueError as exc:
        raise invalid("Party", command, str(exc)) from None
    timing = Timing(
        _ms(params, "Duration", command, gateway.timing.duration_ms, DURATION_MS),
        _ms(params, "Gap", command, gateway.timing.gap_ms, GAP_MS),
    )
    call = gateway.send_dtmf(params.get("CallId", command), TonePlan(symbols, timing), party)
    return "", call


def place_call(params: Params) -> tuple[str, Call]:
    command = "Call"
    dialed = params.required("Dialed", command)
    try:
        if any(isinstance(s, Flash) for s in parse_keys(dialed)):
            raise KeyStringError("a hook flash cannot be dialled (it needs a call up)")
    except KeyStringError as exc:
        raise invalid("Dialed", command, str(exc)) from None
    urls: dict[str, str] = {}
    for name in ("Url", "ErrorUrl", "FinishedUrl", "DtmfUrl"):
        value = params.get(name, command) or ""
        if value:
            try:
                check_url(value, state().gateway.notifier.policy)
            except ValueError as exc:
                raise invalid(name, command, str(exc)) from None
        urls[name] = value
    text = params.get("RingTime", command)
    ring_time: float | None = None
    if text is not None:
        # On a line that hears, how long the call may ring; elsewhere (no
        # answer supervision) the line's fixed answer wait decides.
        try:
            ring_time = float(text)
            if not 1 <= ring_time <= 600:
                raise ValueError
        except ValueError:
            raise invalid("RingTime", command, "expected seconds, 1 to 600") from None
    script = None
    inline = params.get("ResponseOzML", command)
    if inline:
        script = ozml.parse(inline, state().gateway.timing)
    call = state().gateway.place_call(
        dialed, url=urls["Url"], script=script, error_url=urls["ErrorUrl"],
        finished_url=urls["FinishedUrl"], ring_time_s=ring_time, dtmf_url=urls["DtmfUrl"],
    )
    return "  " + element("CallId", call.call_id) + "\n", call


def speak(params: Params) -> tuple[str, Call]:
    command = "Speak"
    text = params.required("Text", command)
    if len(text) > MAX_SPEAK_CHARS:
        raise invalid("Text", command, f"{len(text)} characters is more than {MAX_SPEAK_CHARS}")
    party_text = params.get("Party", command)
    try:
        party = Party.parse(party_text) if party_text else Party.ALL
    except ValueError as exc:
        raise invalid("Party", command, str(exc)) from None
    # Ozeki's Voice names a voice of its text-to-speech engine; espeak-ng's
    # voices are named by language, so either picks one.
    language = params.get("Language", command) or params.get("Voice", command)
    call = state().gateway.speak(params.get("CallId", command), text, language, party)
    return "", call


def play(params: Params) -> tuple[str, Call]:
    command = "Play"
    chosen = ozml.play(params.get("AudioFile", command), params.get("Party", command),
                       params.get("Repeat", command), params.get("Timeout", command))
    return "", state().gateway.play(params.get("CallId", command), chosen)


def blind_transfer(params: Params) -> tuple[str, Call]:
    command = "BlindTransfer"
    # TransferorParty is accepted: an analog line has one party to hand over.
    chosen = ozml.blind_transfer(params.required("Target", command))
    return "", state().gateway.blind_transfer(params.get("CallId", command), chosen.target)


def record_call(params: Params) -> tuple[str, Call]:
    command = "Record"
    chosen = ozml.record(params.get("Format", command), params.get("Duration", command),
                         params.get("Inactivity", command),
                         params.get("FinishDigits", command),
                         params.get("FinishedUrl", command))
    call, recording = state().gateway.record(params.get("CallId", command), chosen)
    # Ours: the file's name; RecordCompleted (to FinishedUrl) says when it is done.
    return "  " + element("RecordingName", recording.name) + "\n", call


def analog_cannot(command: str) -> Handler:
    def refuse(params: Params) -> tuple[str, Call | None]:
        raise Inappropriate(command, ozml.ANALOG_CANNOT[command])

    return refuse


def hang_up(params: Params) -> tuple[str, Call]:
    return "", state().gateway.hang_up(params.get("CallId", "HangUp"))


def list_active_calls(params: Params) -> tuple[str, None]:
    rows = ["  <ActiveCalls>\n"]
    for call in state().gateway.active_calls():
        fields = [
            ("CallId", call.call_id),
            ("Source", call.source),
            ("CallerId", call.caller_id or call.source),
            ("Destination", call.destination),
            ("CallerDialed", call.dialed),
            ("CalleeDialed", call.dialed),
            ("StartTime", call.started_at.strftime("%Y-%m-%d %H:%M:%S")),
            ("RingDuration", f"{call.ring_seconds:.3f}"),
            ("TalkDuration", f"{call.talk_seconds:.3f}"),
            ("CallState", call.state.value),
            # Ours: what the far end pressed so far (on lines that hear keys).
            ("DtmfReceived", "".join(call.keys.all)),
        ]
        rows.append("    <Call>\n")
        rows.extend(f"      {element(name, value)}\n" for name, value in fields)
        rows.append("    </Call>\n")
    rows.append("  </ActiveCalls>\n")
    return "".join(rows), None


Handler = Callable[[Params], tuple[str, Call | None]]
HANDLERS: dict[str, Handler] = {
    "SendDTMF": send_dtmf,
    "Call": place_call,
    "HangUp": hang_up,
    "ListActiveCalls": list_active_calls,
    "Speak": speak,
    "Play": play,
    "BlindTransfer": blind_transfer,
    "Record": record_call,
    **{name: analog_cannot(name) for name in ozml.ANALOG_CANNOT},
}
#: By lower-cased name: the API matches names without regard to case. The
#: names are auth's (``passwd --commands`` checks against them): one list.
COMMANDS: dict[str, tuple[str, Handler]] = {
    name.lower(): (name, HANDLERS[name]) for name in COMMAND_NAMES
}


# -- outcomes -----------------------------------------------------------------


@dataclass
class Outcome:
    """What one command came to: its code, and the call and line it was about."""

    code: Code
    text: str | None = None  # the whole Message; None: the code's own
    extra: str = ""
    call: str = "-"
    line: str = "-"

    @property
    def message(self) -> str:
        return self.text if self.text is not None else MESSAGES[self.code]


def logged_name(command: str) -> str:
    """A command's name as logs, metrics and the command log show it: the
    API's own spelling, ``-`` for none, and ``other`` for every name the API
    does not know (a password typed into the wrong field is one)."""
    if not command:
        return "-"
    known = COMMANDS.get(command.lower())
    return known[0] if known else "other"


def outcome_of(exc: Exception, command: str) -> Outcome:
    """``exc`` as the API answers it; a bug is logged with its traceback and
    answered 800 without one."""
    described = describe(exc)
    if described.code is Code.INTERNAL_ERROR:
        log.error("api: %s failed", logged_name(command) if command else "request",
                  exc_info=exc)
    return Outcome(described.code, described.text, call=described.call, line=described.line)


def execute(handler: Handler, params: Params, command: str) -> Outcome:
    """Run one command's handler; what it raised becomes Ozeki's code. The API
    and the console both come through here, so they answer alike."""
    try:
        extra, answered = handler(params)
    except Exception as exc:
        return outcome_of(exc, command)
    if answered is None:
        return Outcome(Code.OK, extra=extra)
    return Outcome(Code.OK, extra=extra, call=answered.call_id, line=answered.line)


def record(via: str, user: str | None, address: str, command: str, outcome: Outcome,
           elapsed: float) -> None:
    """Count, log and remember one command of the API or the console; ``user``
    is None when nobody signed in (the console's log keeps those apart)."""
    api_state = state()
    metrics = api_state.gateway.metrics
    # Only names the API knows become labels: a made-up name per request,
    # even without a password, would grow the registry without bound.
    name = logged_name(command)
    label = name if name != "-" else "other"
    metrics.command_answered(label, int(outcome.code), elapsed)
    # One line per command. Never the query string: it may carry a password.
    # Every value a client chose goes through logs.escape, so a newline in a
    # CallId cannot forge a second log line.
    log.info("%s user=%s addr=%s command=%s line=%s call=%s code=%d ms=%.0f",
             via, escape(user or "-"), escape(address), name, escape(outcome.line),
             escape(outcome.call), outcome.code, elapsed * 1000)
    entry = CommandRecord(datetime.now(), via, user or "-", address, name, outcome.line,
                          outcome.call, int(outcome.code))
    if user is None:
        api_state.commands.add_refused(entry)
    else:
        api_state.commands.add(entry)
