"""``Client.process``: N worker threads, each peek-locking a message and running
the handler inside ``with msg:`` (renewed by the C renewer, completed on
success, abandoned on an exception). SIGINT/SIGTERM (unless ignored when it
starts) start a graceful drain:
stop receiving, let running handlers finish until ``drain_timeout``, then
release what is still held (``on_drain_timeout``) and return a summary.

A handler still running at the drain deadline cannot be stopped from outside its
thread. Abandoning its message would hand it to another worker while the first
one still works on it, so by default (``on_drain_timeout="expire"``) renewal
stops and the lock is left to run out: the message comes back within one lock
duration, and never while this process still holds a valid lock on it.
``on_drain_timeout="abandon"`` gives it back at once instead, for handlers that
check ``msg.settled`` and stop by themselves.

A handler that fails does not give its message back at once: the message is
held (and renewed) for ``retry_delay`` first, by default 1 s doubled with each
delivery up to 60 s (:func:`exponential_backoff`), so that a short outage of
something the handler needs does not use up the message's deliveries in
milliseconds and dead-letter it. ``on_error(msg, exc)`` is called before the
delay. A drain cuts the delay short and abandons at once.

A receive that fails (after the client's retry policy) is decided by the core's
rule, ``pl_receive_pause_ms``: the worker pauses 1 s, doubled with each further
consecutive failure up to 10 s, and goes on; an error that waiting cannot mend
(a missing entity, a refused key, a bad request) ends the run instead: every
worker stops receiving, running handlers finish as in a drain, the error is
logged once at ERROR and ``run()`` raises it with ``.summary`` attached
(``summary.error``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
import math
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, TypeVar, Union

from . import _core
from ._held import hold_failures
from ._validate import (
    _DEFAULT_CONCURRENCY,
    _DEFAULT_DRAIN_TIMEOUT,
    _DEFAULT_MAX_WAIT,
    _DEFAULT_ON_DRAIN_TIMEOUT,
    _DEFAULT_POLL_TIMEOUT,
    _DEFAULT_PROGRESS_INTERVAL,
    _DEFAULT_RETRY,
    _ON_DRAIN_TIMEOUT,
    _check_entity,
    _check_max_renew,
    _check_seconds,
    _check_timeout,
)
from .errors import PL_ELOCKLOST, PL_ESERVER, PL_EUNKNOWN, ClosedError, Error, LockLostError, OutcomeUnknownError
from ._spans import no_context

if TYPE_CHECKING:
    from .client import Client, Message

__all__ = ["Processor", "ProcessSummary", "exponential_backoff"]

log = logging.getLogger("peeklock")


def exponential_backoff(base: float = 1.0, cap: float = 60.0) -> Callable[["Message"], float]:
    """A retry delay of ``base`` seconds on the first delivery, doubled with
    each further delivery, at most ``cap``."""
    if not base >= 0 or not cap >= 0:
        raise ValueError("base and cap must be non-negative numbers of seconds")

    def delay(msg: "Message") -> float:
        return float(min(cap, base * 2.0 ** min(max(msg.delivery_count - 1, 0), 62)))

    return delay


RetryDelay = Union[float, Callable[["Message"], float], None]
_M = TypeVar("_M", bound="Message")  # a message of this client or of peeklock.aio's
# pl_settle_action's value for a returned action -> how the message ended (PL_RUN_F_*)
_SETTLED = {_core.PL_SETTLE_COMPLETE: _core.PL_RUN_F_COMPLETED, _core.PL_SETTLE_UNLOCK: _core.PL_RUN_F_ABANDONED}


# ---- pure helpers shared by this processor and peeklock.aio's ----
def _check_option(name: str, value: Any, *, whole: bool = False) -> Any:
    """A processor option: its type here (an int when ``whole``, else a number
    of seconds), its value the core's (pl_check_process_option), refused with
    the core's message as InvalidArgument. None is passed through."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        raise TypeError(f"{name} must be {'an int' if whole else 'a number'}, not {type(value).__name__}")
    try:
        f = float(value)
    except OverflowError:  # an int beyond a double: out of range all the same
        f = math.inf
    _core.pl_check_process_option(name, f)
    return value


def _check_retry_delay(retry_delay: RetryDelay) -> RetryDelay:
    """A retry delay as given, or the default's exponential_backoff()."""
    if retry_delay is _DEFAULT_RETRY:
        return exponential_backoff()
    if retry_delay is None or callable(retry_delay):
        return retry_delay
    return float(_check_option("retry_delay", retry_delay))


@dataclass
class _Options:
    """The options both processors take, checked (_check_options)."""

    entity: str
    handler: Callable[[Any], Any]
    concurrency: int
    max_renew: Optional[float]
    poll_timeout: int
    max_messages: Optional[int]
    idle_timeout: Optional[float]
    retry_delay: RetryDelay
    on_error: Optional[Callable[[Any, BaseException], Any]]
    batch: Optional[int]
    max_wait: float


def _check_options(
    entity: Any,
    handler: Any,
    *,
    concurrency: Any,
    max_renew: Any,
    poll_timeout: Any,
    max_messages: Any,
    idle_timeout: Any,
    retry_delay: Any,
    on_error: Any,
    batch: Any,
    max_wait: Any,
) -> _Options:
    """Checks the options this processor and peeklock.aio's share, in one order,
    so that both refuse a call with the same error; each checks its own others
    (drain_timeout, which aio's may leave None, progress_interval, ...)."""
    entity = _check_entity(entity)
    if not callable(handler):
        raise TypeError("handler must be callable")
    _check_option("concurrency", concurrency, whole=True)
    retry = _check_retry_delay(retry_delay)
    if on_error is not None and not callable(on_error):
        raise TypeError("on_error must be callable")
    _check_option("batch", batch, whole=True)
    wait = float(_check_option("max_wait", max_wait))
    mr = _check_max_renew(max_renew, optional=True)
    poll = _check_timeout(poll_timeout, "poll_timeout")
    _check_option("max_messages", max_messages, whole=True)
    idle = _check_option("idle_timeout", idle_timeout)
    return _Options(
        entity=entity,
        handler=handler,
        concurrency=concurrency,
        max_renew=mr,
        poll_timeout=poll,
        max_messages=max_messages,
        idle_timeout=None if idle is None else float(idle),
        retry_delay=retry,
        on_error=on_error,
        batch=batch,
        max_wait=wait,
    )


def _retry_seconds(retry_delay: RetryDelay, msg: "Message") -> float:
    """How long a failed message is held before it is abandoned (0: at once)."""
    if retry_delay is None:
        return 0.0
    try:
        return max(0.0, float(retry_delay(msg) if callable(retry_delay) else retry_delay))
    except Exception as e:  # a broken delay policy must not lose the message
        log.warning("retry_delay raised %s: abandoning at once", type(e).__name__)
        return 0.0


def _most_delivered(msgs: Sequence[_M]) -> _M:
    """The message of a failed batch whose delivery count sets the retry delay."""
    return max(msgs, key=lambda m: m.delivery_count)


def _next_timeout(have: int, deadline: float, poll_timeout: int) -> Optional[int]:
    """The long poll of a batch's next receive: poll_timeout for the first
    message, then what is left until ``deadline`` (max_wait after the first),
    whole seconds as the core rounds them, at most the longest receive (a
    longer max_wait takes several); None when the batch is complete."""
    if not have:
        return poll_timeout
    left = deadline - time.monotonic()
    return _core.pl_timeout_seconds(min(left, _core.PL_MAX_RECEIVE_TIMEOUT_S)) if left > 0 else None


def _plan(msgs: Sequence[_M], actions: Mapping[Any, str]) -> List[Tuple[_M, str, int]]:
    """A batch handler's returned mapping: message (or sequence number) ->
    "complete" or "abandon", checked whole before any of it is applied. Each
    entry: the message, its action and the core's settle for it
    (pl_settle_action: PL_SETTLE_COMPLETE or PL_SETTLE_UNLOCK)."""
    by_seq = {m.sequence_number: m for m in msgs}
    plan = []
    for key, action in actions.items():
        m = by_seq.get(key) if isinstance(key, int) else key
        if m is None or m not in msgs:
            raise ValueError(f"the handler's result names {key!r}, not one of its messages")
        # the names are the core's (pl_settle_action); a NUL would cut one short in C
        settle = _core.pl_settle_action(action if isinstance(action, str) and "\0" not in action else "")
        if settle < 0:
            rule = _core.pl_py_error_last()[3].split(": ", 1)[-1]
            raise ValueError(f"the handler's result says {action!r} for message {m.sequence_number}: {rule}")
        plan.append((m, action, settle))
    return plan


def _lock_state(msg: "Message") -> int:
    """The message's lock state (PL_LOCK_*), as the core's rules take it."""
    return int(_core.pl_message_lock_state(msg._h))


def _settle_rc(e: Optional[BaseException]) -> int:
    """The settle at a block's exit as the core's pl_run_how takes it: 0 when it
    succeeded (or none was made), else its code."""
    if e is None:
        return 0
    if isinstance(e, LockLostError):
        return PL_ELOCKLOST
    if isinstance(e, OutcomeUnknownError):
        return PL_EUNKNOWN
    return int(getattr(e, "code", 0) or PL_ESERVER)


def _how(msg: "Message", before: int, failed: bool, exit_error: Optional[BaseException] = None) -> int:
    """How a handled message ended (PL_RUN_F_* flags), by the core's one rule
    (pl_run_how): ``before``, its lock state when the handler returned or
    raised; ``failed``, the handler raised; ``exit_error``, the error of the
    settle at the block's exit (None: it succeeded or none was made)."""
    return int(_core.pl_run_how(before, int(failed), _settle_rc(exit_error), _lock_state(msg)))


def _settle_failed(e: Error) -> int:
    """A settle's error as pl_run_finish counts it: unknown outcome, or failed."""
    return _core.PL_RUN_F_UNKNOWN if isinstance(e, OutcomeUnknownError) else _core.PL_RUN_F_SETTLE_ERROR


def _given_back(msg: "Message") -> int:
    """How a message given back unprocessed ended (PL_RUN_F_*), by its state once
    its abandon ran (the core's pl_run_given_back): a drain or close while a
    batch was collected, or a message that arrived after the drain began."""
    return int(_core.pl_run_given_back(msg._h))


def _remember(s: "ProcessSummary", text: str) -> None:
    s.last_errors = (s.last_errors + [text])[-5:]


def _after_failure(msg: "Message", delay: float) -> str:
    """What becomes of a message whose handler raised, by its state: abandoned
    (after the retry delay) while still held, else what the handler's own
    settle, or the lost lock, already made of it (nothing is abandoned)."""
    outcome = msg.outcome
    if outcome in ("completed", "abandoned"):
        return f"it was already {outcome} by the handler"
    if outcome == "lost":
        return "its lock was lost, nothing to abandon"
    if outcome == "unknown":
        return "a settle by the handler had an unknown outcome, nothing to abandon"
    return "abandoning" + (f" in {delay:g} s" if delay else "")


def _log_failure(entity: str, msg: "Message", exc: BaseException, delay: float) -> None:
    """Logs a handler's failure with its traceback (the message it is about
    and what becomes of it: see _after_failure)."""
    log.warning(
        "handler for message %s (id %s) in %s failed: %s: %s; %s",
        msg.sequence_number,
        msg.message_id,
        entity,
        type(exc).__name__,
        exc,
        _after_failure(msg, delay),
        exc_info=(type(exc), exc, exc.__traceback__),
    )


def _log_receive_failure(entity: str, exc: Error, held: List[Dict[str, Any]], pause: float) -> None:
    """Logs a failed receive once: the processor's words with the failed call's
    ``peeklock_*`` fields (its record was held back, peeklock._held); at ERROR
    when the run ends with it (``pause`` < 0), else the pause before the next."""
    then = "the processor stops" if pause < 0 else f"trying again in {pause:g} s"
    level = logging.ERROR if pause < 0 else logging.WARNING
    if held:
        extra = held[-1]
        log.log(
            level,
            "receive from %s failed after %d attempt%s: %s; %s",
            entity,
            extra["peeklock_attempt"],
            "" if extra["peeklock_attempt"] == 1 else "s",
            exc,
            then,
            extra=extra,
        )
    else:  # raised before any request (a token provider)
        log.log(
            level,
            "receive from %s failed: %s; %s",
            entity,
            exc,
            then,
            extra={
                "peeklock_operation": "peek_lock",
                "peeklock_entity": entity,
                "peeklock_status": exc.status,
                "peeklock_code": exc.code,
            },
        )


def _receive_failed(run: Any, s: "ProcessSummary", exc: Error, held: List[Dict[str, Any]], failures: int) -> float:
    """A failed receive (after the client's retry policy), counted by the run,
    by the core's rule (pl_run_receive_failed): the seconds to pause before the
    consumer's next receive, or -1 when waiting cannot mend it and the run ends
    with it (``s.error``, logged at ERROR by the first consumer to meet it).
    ``failures``: the consumer's consecutive failed receives, this one included."""
    pause, log = _count_receive_failure(run, s, exc, failures)
    if log:
        _log_receive_failure(s.entity, exc, held, pause)
    return pause


def _count_receive_failure(run: Any, s: "ProcessSummary", exc: Error, failures: int) -> Tuple[float, bool]:
    """_receive_failed's counting, for a caller that holds a lock while it counts
    and logs after: the pause (-1: the run ends, stopped by PL_RUN_ERROR) and
    whether this call logs."""
    _remember(s, f"receive: {exc}")
    ms = _core.pl_run_receive_failed(run, exc.code, int(exc.retryable), failures, _core.pl_now_mono_ms())
    _show(run, s)
    if ms < 0:
        first = s.error is None
        if first:
            s.error = exc
        return -1.0, first
    return ms / 1000, True


def _new_run(max_messages: Optional[int], idle_timeout: Optional[float]) -> Any:
    """A run's bookkeeping in the core (pl_run: claims against max_messages,
    messages in flight, idle, why it stopped), started now."""
    opts: Dict[str, Any] = {}
    if max_messages is not None:
        opts["max_messages"] = max_messages
    if idle_timeout is not None:
        opts["idle_timeout"] = float(idle_timeout)
    return _core.pl_run_new(_core.pl_now_mono_ms(), **opts)


def _show(run: Any, s: "ProcessSummary") -> None:
    """Shows the run's counts (pl_run_tallies, a dict by field name) in the
    summary's fields of those names."""
    for name, n in _core.pl_run_tallies_get(run).items():
        setattr(s, name, n)


def _received(run: Any, msg: "Message") -> None:
    """Tells the run a message was received (counted, and in flight; a
    processor with threads calls it under its lock). The summary shows the
    counts when it is read (_show), not at each message."""
    _core.pl_run_received(run, msg.delivery_count, _core.pl_now_mono_ms())


def _finished(run: Any, how: int) -> None:
    """Tells the run a received message is done with, how it ended (PL_RUN_F_*
    flags: the core classifies and counts it; the summary shows it at _show)."""
    _core.pl_run_finish(run, how, _core.pl_now_mono_ms())


def _stop(run: Any, s: "ProcessSummary", reason: int) -> None:
    """Records why the run stops (the core's rule: the first cause wins, an
    error replaces any) and shows the run's reason in the summary."""
    s.stopped_by = _core.pl_run_stop_word(_core.pl_run_stop(run, reason, _core.pl_now_mono_ms())) or ""


def _raise_error(s: "ProcessSummary") -> "ProcessSummary":
    """The run's summary, or its error raised with the summary attached."""
    if s.error is not None:
        s.error.summary = s  # type: ignore[attr-defined]
        raise s.error
    return s


class _Drained(Exception):
    """Passed to a message's exit when a drain gives back a batch unprocessed."""


@dataclass
class ProcessSummary:
    """What a processor run did."""

    entity: str = ""
    # the counts are the core's (pl_run_tallies), by the same names in Lua
    received: int = 0  # messages locked
    processed: int = 0  # handler returned and the message was completed
    failed: int = 0  # handler raised: abandoned (will be redelivered)
    settled_by_handler: int = 0  # the handler completed or abandoned the message itself
    lost: int = 0  # lock lost: nothing completed
    unknown: int = 0  # a settle's outcome is unknown: maybe completed
    abandoned_on_drain: int = 0  # given back at once by the drain (see on_drain_timeout)
    left_to_expire: int = 0  # handler still running at the drain deadline: renewal
    # stopped, lock left to run out (on_drain_timeout="expire")
    errors: int = 0  # receive or settle errors (after retries), unknown included
    renewals: int = 0  # lock renewals by the C renewer during the run
    redelivered: int = 0  # received with delivery_count > 1
    in_flight: int = 0  # received, not yet finished (the core's count: pl_run_in_flight)
    elapsed: float = 0.0
    stopped_by: str = ""  # "signal", "stop_event", "max_messages", "idle", "error", "closed", "stopped"
    last_errors: List[str] = field(default_factory=list)
    error: Optional[Error] = None  # the failed receive that ended the run (process() raises it)

    @property
    def abandoned(self) -> int:
        return self.failed + self.abandoned_on_drain

    @property
    def rate(self) -> float:
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.entity}: processed {self.processed}, failed {self.failed} (abandoned), "
            + (f"settled by the handler {self.settled_by_handler}, " if self.settled_by_handler else "")
            + f"lost locks {self.lost}, "
            + (f"outcome unknown {self.unknown}, " if self.unknown else "")
            + f"abandoned on drain {self.abandoned_on_drain}, "
            + (f"left to expire {self.left_to_expire}, " if self.left_to_expire else "")
            + f"renewals {self.renewals}, redelivered {self.redelivered}, "
            f"errors {self.errors} in {self.elapsed:.1f} s ({self.rate:.1f}/s)"
            + (f"; stopped by {self.stopped_by}" if self.stopped_by else "")
            + (f": {type(self.error).__name__}: {self.error}" if self.error is not None else "")
        )


class Processor:
    def __init__(
        self,
        client: "Client",
        entity: str,
        handler: Callable[[Any], Any],
        *,
        concurrency: int = _DEFAULT_CONCURRENCY,
        max_renew: Optional[float] = None,
        poll_timeout: float = _DEFAULT_POLL_TIMEOUT,
        drain_timeout: float = _DEFAULT_DRAIN_TIMEOUT,
        max_messages: Optional[int] = None,
        idle_timeout: Optional[float] = None,
        stop_event: Optional[threading.Event] = None,
        handle_signals: bool = True,
        on_progress: Optional[Callable[[ProcessSummary], Any]] = None,
        progress_interval: float = _DEFAULT_PROGRESS_INTERVAL,
        on_drain_timeout: str = _DEFAULT_ON_DRAIN_TIMEOUT,
        retry_delay: RetryDelay = _DEFAULT_RETRY,
        on_error: Optional[Callable[["Message", BaseException], Any]] = None,
        batch: Optional[int] = None,
        max_wait: float = _DEFAULT_MAX_WAIT,
    ) -> None:
        self.client = client
        o = _check_options(
            entity,
            handler,
            concurrency=concurrency,
            max_renew=max_renew,
            poll_timeout=poll_timeout,
            max_messages=max_messages,
            idle_timeout=idle_timeout,
            retry_delay=retry_delay,
            on_error=on_error,
            batch=batch,
            max_wait=max_wait,
        )
        if on_drain_timeout not in _ON_DRAIN_TIMEOUT:
            raise ValueError("on_drain_timeout must be 'expire' or 'abandon'")
        self.entity, self.handler, self.concurrency, self.max_renew = o.entity, o.handler, o.concurrency, o.max_renew
        self.poll_timeout, self.max_messages, self.idle_timeout = o.poll_timeout, o.max_messages, o.idle_timeout
        self.retry_delay, self.on_error, self.batch, self.max_wait = o.retry_delay, o.on_error, o.batch, o.max_wait
        self.on_drain_timeout = on_drain_timeout
        self.drain_timeout = _check_seconds(drain_timeout, "drain_timeout")
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.handle_signals = handle_signals
        self.on_progress = on_progress
        self.progress_interval = _check_seconds(progress_interval, "progress_interval", zero=True)
        self._summary = ProcessSummary(entity=self.entity)
        self._running = False  # run() under way: reading .summary refreshes it
        self._lock = threading.Lock()
        self._held: Set["Message"] = set()
        # .failures: this worker's consecutive failed receives; .out: no claim was left for it
        self._consumer = threading.local()
        self._run: Any = None  # pl_run, from run(): made before the workers start
        self._signals = 0
        self._start = 0.0
        self._stats0 = 0
        self._next_progress = 0.0

    @property
    def summary(self) -> ProcessSummary:
        """The run's summary, current when read, from any thread (a handler, a
        health check): while the run is under way its counts (the core's,
        pl_run_tallies) and ``elapsed`` are refreshed on each read rather than
        at each message; ``renewals`` at each ``on_progress`` and at the end."""
        s = self._summary
        if self._running:
            with self._lock:
                _show(self._run, s)
            s.elapsed = time.monotonic() - self._start
        return s

    # ---- workers ----
    # (the pl_run calls need no lock of ours: each runs whole under the GIL)
    def _claim(self) -> bool:
        """A claim on the next message (pl_run_claim); none once max_messages are
        claimed or the run stops: this worker is then out."""
        self._consumer.out = _core.pl_run_claim(self._run, 1) == 0
        return not self._consumer.out

    def _unclaim(self) -> None:
        _core.pl_run_unclaim(self._run, 1)

    def _stop(self, reason: int) -> None:
        with self._lock:
            _stop(self._run, self._summary, reason)

    def _note_error(self, text: str) -> None:
        """Remembers a settle's error (pl_run_finish counts it)."""
        with self._lock:
            _remember(self._summary, text)

    def _worker(self) -> None:
        self._consumer.failures = 0
        self._consumer.out = False
        if self.batch is not None:
            self._batch_worker(self.batch)
            return
        while not self.stop_event.is_set():
            msg = self._receive(self.poll_timeout)
            if msg is None:
                if self._claimed_out():
                    break
                continue
            if self.stop_event.is_set():
                # arrived after the drain began: give it back at once
                try:
                    msg.abandon()
                except Error as e:
                    self._note_error(f"abandon on drain: {e}")
                with self._lock:
                    _finished(self._run, _given_back(msg))
                break
            with self._lock:
                self._held.add(msg)
            handler_failed = False
            before = _core.PL_LOCK_HELD  # its lock state when the handler returned or raised
            try:
                with msg:
                    try:
                        self.handler(msg)
                    except Exception as e:
                        handler_failed = True
                        before = _lock_state(msg)
                        self._handler_failed(msg, e)
                        raise
                    before = _lock_state(msg)
                how = _how(msg, before, False)
            except Exception as e:
                if handler_failed or not isinstance(e, Error):  # the handler's own failure (logged)
                    how = _how(msg, before, True)
                else:  # the settle at the block's exit
                    if not isinstance(e, LockLostError):
                        self._note_error(f"settle: {type(e).__name__}: {e}")
                        log.warning("settle of message %s failed: %s", msg.sequence_number, e)
                    how = _how(msg, before, False, e)
            except BaseException:
                with self._lock:
                    if msg in self._held:
                        self._held.discard(msg)
                        _finished(self._run, _core.PL_RUN_F_HANDLER_FAILED)
                self.stop_event.set()
                raise
            self._count(msg, how)  # (one the drain released was counted by it)

    def _count(self, msg: "Message", how: int) -> None:
        """Counts a message whose handler finished (how: PL_RUN_F_* flags); one
        the drain released was counted by it (left to expire: the core moves it
        to processed if the handler completed it after all)."""
        with self._lock:
            if msg in self._held:
                self._held.discard(msg)
                _finished(self._run, how)
            elif self.on_drain_timeout == "expire":
                _finished(self._run, how | _core.PL_RUN_F_LATE)
                _show(self._run, self._summary)  # (after the run's end: its summary moves)

    def _receive(self, timeout: int) -> Optional["Message"]:
        """One claimed peek-lock, or None (nothing, a failure, or the cap). A
        failure pauses this worker by the core's rule, or ends the run."""
        if not self._claim():
            return None
        held = hold_failures()
        try:
            with held:
                msg = self.client.peek_lock(self.entity, timeout, max_renew=self.max_renew)
        except ClosedError:  # closed under the run: it ends quietly
            self._unclaim()
            self._stop(_core.PL_RUN_CLOSED)
            self.stop_event.set()
            return None
        except Error as e:
            self._unclaim()
            self._consumer.failures += 1
            with self._lock:  # (logged after: a log handler's I/O holds up no other worker)
                pause, log = _count_receive_failure(self._run, self._summary, e, self._consumer.failures)
            if log:
                _log_receive_failure(self.entity, e, held.records, pause)
            if pause < 0:
                self._stop(_core.PL_RUN_ERROR)
                self.stop_event.set()
            else:
                self.stop_event.wait(pause)  # a drain cuts it short
            return None
        self._consumer.failures = 0
        if msg is None:
            self._unclaim()
            return None
        with self._lock:
            _received(self._run, msg)
        return msg

    # ---- batches ----
    def _collect(self, size: int) -> List["Message"]:
        """Up to ``size`` messages, each held by the renewer from its receipt:
        the first waits up to poll_timeout, the rest until max_wait after it."""
        msgs: List["Message"] = []
        deadline = 0.0
        while not self.stop_event.is_set() and len(msgs) < size:
            timeout = _next_timeout(len(msgs), deadline, self.poll_timeout)
            if timeout is None:
                break
            msg = self._receive(timeout)
            if not msgs:
                deadline = time.monotonic() + self.max_wait
            if msg is None:
                if not msgs:
                    return msgs
                if self._claimed_out() or self.client._closed:
                    break
                continue  # the batch closes at its deadline (max_wait may outlast a receive)
            with no_context():  # the batch's process spans do not nest
                msg.__enter__()
            with self._lock:
                self._held.add(msg)
            msgs.append(msg)
        if self.stop_event.is_set() and msgs:
            # the drain began while collecting: nothing has run, give them back
            for m in msgs:
                m.__exit__(_Drained, _Drained(), None)
            with self._lock:
                for m in msgs:
                    if m in self._held:  # (else released by the drain, which counted it)
                        self._held.discard(m)
                        _finished(self._run, _given_back(m))
            return []
        return msgs

    def _batch_worker(self, size: int) -> None:
        while not self.stop_event.is_set():
            msgs = self._collect(size)
            if not msgs:
                if self._claimed_out():
                    return
                continue
            error: Optional[BaseException] = None
            applied: Dict["Message", int] = {}
            try:
                result = self.handler(msgs)
                if isinstance(result, dict):
                    applied = self._apply(msgs, result)
            except Exception as e:
                error = e
                unsettled = [m for m in msgs if not m.settled]
                if unsettled:
                    self._handler_failed(_most_delivered(unsettled), e, also=unsettled)
            except BaseException:
                for m in msgs:
                    m.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
                self.stop_event.set()
                raise
            for m in reversed(msgs):  # the reverse of entering (contexts nest)
                self._finish(m, error, applied.get(m, 0))

    def _claimed_out(self) -> bool:
        """This worker found no claim left (max_messages, or the run stops)."""
        return bool(self._consumer.out)

    def _apply(self, msgs: List["Message"], actions: Dict[Any, str]) -> Dict["Message", int]:
        """A handler's returned mapping (see _plan), each action applied on its
        own (one failing settle does not stop the others). Returns how each
        message ended (PL_RUN_F_*: completed, abandoned, lost, its settle failed)."""
        plan = _plan(msgs, actions)
        out: Dict["Message", int] = {}
        for m, action, settle in plan:
            if m.settled:
                continue
            try:
                if settle == _core.PL_SETTLE_COMPLETE:
                    m.complete()
                else:
                    m.abandon()
                out[m] = _SETTLED[settle]
            except LockLostError:
                out[m] = _core.PL_RUN_F_LOST
            except Error as e:
                out[m] = _settle_failed(e)
                self._note_error(f"{action}: {e}")
        return out

    def _finish(self, m: "Message", error: Optional[BaseException], applied: int = 0) -> None:
        """Settles what the handler left, as ``with msg:`` does, and counts it
        (``applied``: how the handler's returned mapping settled it)."""
        before = _lock_state(m)
        exit_error: Optional[Error] = None
        try:
            if error is None:
                m.__exit__(None, None, None)
            else:
                m.__exit__(type(error), error, error.__traceback__)
        except Error as e:
            exit_error = e
            if not isinstance(e, LockLostError):
                self._note_error(f"settle: {e}")
        self._count(m, applied | _how(m, before, error is not None, exit_error))

    def _handler_failed(self, msg: "Message", exc: BaseException, also: Optional[List["Message"]] = None) -> None:
        """Logs the failure with its traceback, calls on_error, then holds the
        message (renewed) for the retry delay unless a drain starts."""
        delay = _retry_seconds(self.retry_delay, msg)
        with self._lock:
            _remember(self._summary, f"handler: {type(exc).__name__}: {exc}")
        _log_failure(self.entity, msg, exc, delay)
        if self.on_error is not None:
            for m in also or [msg]:
                try:
                    self.on_error(m, exc)
                except Exception as e:
                    log.warning("on_error raised %s: %s\n%s", type(e).__name__, e, traceback.format_exc())
        if delay and msg.state == "held":
            self.stop_event.wait(delay)  # a drain cuts the delay short

    # ---- signals ----
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        # (not under self._lock: this runs on the main thread, which may hold it)
        _stop(self._run, self._summary, _core.PL_RUN_SIGNAL)
        log.info("signal %d: draining (%d in flight)", signum, _core.pl_run_in_flight(self._run))
        self.stop_event.set()

    def run(self) -> ProcessSummary:
        s = self._summary
        self._start = time.monotonic()
        self._run = _new_run(self.max_messages, self.idle_timeout)
        self._running = True
        self._stats0 = int(self.client.stats().get("renewer", {}).get("renewals", 0))
        self._next_progress = time.monotonic()
        old: Dict[Any, Any] = {}
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                # a signal ignored by whoever started us stays ignored (a non-interactive
                # shell's `worker &` ignores SIGINT), as Python itself does at start
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    old[sig] = signal.signal(sig, self._on_signal)
        threads = [
            threading.Thread(target=self._worker, name=f"peeklock-worker-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        try:
            for t in threads:
                t.start()
            self._run_until_stopped(threads)
            self._drain(threads)
        except BaseException:
            # e.g. KeyboardInterrupt with handle_signals=False: stop at once,
            # give back what is held, and let the interrupt propagate
            self.stop_event.set()
            self._release_held()
            raise
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            with self._lock:
                self._running = False
                _show(self._run, s)
        s.elapsed = time.monotonic() - self._start
        s.renewals = self._renewals(self._stats0)
        if self.on_progress is not None:
            self.on_progress(s)
        log.info("processor finished: %s", s)
        return _raise_error(s)

    def _progress(self) -> None:
        if self.on_progress is not None and time.monotonic() >= self._next_progress:
            with self._lock:
                _show(self._run, self._summary)
            self._summary.elapsed = time.monotonic() - self._start
            self._summary.renewals = self._renewals(self._stats0)
            self.on_progress(self._summary)
            self._next_progress = time.monotonic() + self.progress_interval

    def _run_until_stopped(self, threads: List[threading.Thread]) -> None:
        """Until the workers end, a stop_event or the run is idle (pl_run)."""
        while any(t.is_alive() for t in threads):
            if self.stop_event.wait(0.1):
                break
            if _core.pl_run_stop_reason(self._run, _core.pl_now_mono_ms()) == _core.PL_RUN_IDLE:
                break
            self._progress()
        self._stop(_core.PL_RUN_STOP_EVENT if self.stop_event.is_set() else _core.PL_RUN_STOPPED)
        self.stop_event.set()

    def _drain(self, threads: List[threading.Thread]) -> None:
        """Running handlers may finish until the deadline; then what is still
        held is released as on_drain_timeout says."""
        deadline = time.monotonic() + self.drain_timeout
        signals_at_drain = self._signals
        for t in threads:
            while t.is_alive() and time.monotonic() < deadline:
                if self._signals > signals_at_drain:
                    deadline = time.monotonic()  # asked again: stop now
                t.join(0.1)
                self._progress()
        self._release_held()

    def _release_held(self) -> None:
        """Every message in _held has a handler running on it. Each is the drain's
        to count once it leaves _held (a handler finishing later finds it gone):
        left to expire at once, or given back by its state after its abandon."""
        drained = self.on_drain_timeout == "abandon"
        with self._lock:
            leftovers = list(self._held)
            self._held.clear()
            if not drained:
                for _ in leftovers:
                    _finished(self._run, _core.PL_RUN_F_EXPIRED)
        for msg in leftovers:
            if drained:
                was = msg.state
                try:
                    if was == "held":  # (not one its handler settled, or is settling, meanwhile)
                        msg.abandon()
                except Error as e:
                    self._note_error(f"abandon on drain: {e}")
                    log.warning("abandon on drain of message %s: %s", msg.sequence_number, e)
                # a settle its handler had under way is the handler's, as in peeklock.aio
                how = _core.PL_RUN_F_BY_HANDLER if was == "settling" else _given_back(msg)
                with self._lock:
                    _finished(self._run, how)
            else:
                msg._stop_renewing()
                log.warning(
                    "handler for message %s still running at the drain deadline: renewal stopped, lock left to expire",
                    msg.sequence_number,
                )

    def _renewals(self, base: int) -> int:
        return int(self.client.stats().get("renewer", {}).get("renewals", 0)) - int(base)
