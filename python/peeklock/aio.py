"""peeklock.aio — the asyncio API.

Every operation runs on the C core's asynchronous engine (one I/O thread and one
curl multi handle per client, however many operations are outstanding); its
completions are signalled on a file descriptor the event loop watches with
``loop.add_reader``: no thread per call, no polling, no wake-up while idle.

Locks held in ``async with msg:`` are renewed by the C renewer on its own thread,
so a handler that blocks the event loop (``time.sleep``, a slow C extension)
does not starve its renewals::

    async with peeklock.aio.Client.from_connection_string(conn) as client:
        await client.send("orders", b"hello")
        async with client.peek_lock("orders") as msg:
            if msg is not None:
                print(msg.body)     # completed on a clean exit

Cancellation is exact: cancelling a pending receive stops its transfer, and a
lock that arrived anyway is abandoned at once (``stats()["aio"]["cancel_abandoned"]``),
so a cancelled receive hides no message.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import time
from types import TracebackType
from typing import (Any, AsyncIterator, Awaitable, Callable, Dict, Generator, Iterable, List,
                    Mapping, Optional, Set, Tuple, Type, Union)

from . import _core
from . import _validate
from . import client as _client
from . import errors as _errors
from .client import Body, OutgoingMessage, PropertyValue, TokenProvider
from .errors import ClosedError, Error, LockLostError, OutcomeUnknownError
from .processor import ProcessSummary

__all__ = ["Client", "Message", "ProcessSummary"]

log = logging.getLogger("peeklock.aio")

_E_CLOSED = _errors.PL_ECLOSED
_E_CANCELED = -19
# what a completion carries: (code, http_status, retryable, text, message handle, orphaned)
_Result = Tuple[int, int, int, str, Any, int]


def _raise_for(res: _Result) -> None:
    code = res[0]
    if code < 0:
        raise _errors.from_code(code, res[1], res[2], res[3] or None)


class _Engine:
    """One client's C engine and its registration with one event loop."""

    def __init__(self, client_h: Any) -> None:
        self._a: Any = _core.pl_aio_new(client_h)
        self._fd: int = _core.pl_aio_fd(self._a)
        self._futs: Dict[int, "asyncio.Future[_Result]"] = {}
        self._peek: Dict[int, bool] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.closed = False

    def _attach(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            loop.add_reader(self._fd, self._on_readable)
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a peeklock.aio.Client serves the event loop it was first used on")
        return loop

    def _detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._loop = None

    def _on_readable(self) -> None:
        for id_, code, status, retryable, text, h, orphaned in _core.pl_py_aio_drain(self._a):
            fut = self._futs.pop(id_, None)
            peek = self._peek.pop(id_, False)
            if fut is not None and not fut.done():
                fut.set_result((code, status, retryable, text, h, orphaned))
            elif h is not None:
                self._orphan(h, peek)

    def _orphan(self, h: Any, peek: bool) -> None:
        """A message that reached an operation nobody waits for any more."""
        if peek:
            try:
                _core.pl_aio_unlock_detached(self._a, h)
            except Error as e:
                log.warning("could not abandon a lock that reached a cancelled receive: %s", e)
        else:
            log.error("receive_and_delete was cancelled after message %s was deleted; it is lost "
                      "to the caller", _core.pl_message_sequence_number(h))

    async def run(self, submit: Callable[..., int], *args: Any, peek: bool = False) -> _Result:
        loop = self._attach()
        id_ = submit(self._a, *args)
        fut: "asyncio.Future[_Result]" = loop.create_future()
        self._futs[id_] = fut
        if peek:
            self._peek[id_] = True
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # the answer came, then this task was cancelled before it resumed
                h = fut.result()[4]
                if h is not None:
                    self._orphan(h, peek)
            else:
                try:
                    _core.pl_aio_cancel(self._a, id_)
                except Error:
                    pass    # on the wire: its completion says what happened; _on_readable drops it
            raise

    def pending(self) -> List["asyncio.Future[_Result]"]:
        return list(self._futs.values())

    def stats(self) -> Dict[str, int]:
        return dict(_core.pl_aio_stats_get(self._a))


class Message(_client.Message):
    """A received message, settled with ``await msg.complete()`` or
    ``await msg.abandon()``, or by ``async with msg:`` (the C renewer keeps the
    lock while the block runs; completed on a clean exit, abandoned on an
    exception or cancellation; LockLostError at the exit when it was lost).

    With ``cancel_on_lost`` set (``client.peek_lock(..., cancel_on_lost=True)``
    or the attribute), a lock lost while the block runs also cancels the task
    running the block at its next await, and the block then raises
    LockLostError: a handler stops working on a message it no longer owns."""

    __slots__ = ("_aio", "cancel_on_lost", "_watch", "_cancelled_lost")

    def __init__(self, handle: Any, aio: "Client", max_renew: Optional[float] = None,
                 cancel_on_lost: bool = False) -> None:
        super().__init__(handle, aio._sync, max_renew)
        self._aio = aio
        self.cancel_on_lost = cancel_on_lost
        self._watch: Optional[asyncio.TimerHandle] = None
        self._cancelled_lost = False

    async def renew_lock(self) -> None:  # type: ignore[override]
        """Renews the lock once, now (``async with`` does this for you)."""
        await self._settle(_core.pl_aio_renew_lock)

    async def complete(self) -> None:  # type: ignore[override]
        """Deletes the message. LockLostError when the lock was lost,
        StateError when already settled, OutcomeUnknownError when unknown."""
        self._stop_renewing()
        await self._settle(_core.pl_aio_complete)

    async def abandon(self) -> None:  # type: ignore[override]
        """Releases the lock so the message is delivered again at once."""
        self._stop_renewing()
        await self._settle(_core.pl_aio_unlock)

    unlock = abandon  # type: ignore[assignment]

    async def _settle(self, fn: Callable[..., int]) -> None:
        c = self._aio
        c._check_open()
        c._sync._refresh_token()
        _raise_for(await c._engine.run(fn, self._h))

    def _abandon_now(self) -> None:
        """Abandons without waiting (a cancelled block): counted by the engine."""
        self._stop_renewing()
        try:
            _core.pl_aio_unlock_detached(self._aio._engine._a, self._h)
        except Error as e:
            log.warning("abandon of message %s after cancellation failed: %s", self.sequence_number, e)

    async def __aenter__(self) -> "Message":
        self.__enter__()
        if self.cancel_on_lost:
            task = asyncio.current_task()
            if task is not None:
                self._arm(asyncio.get_running_loop(), task)
        return self

    def _arm(self, loop: asyncio.AbstractEventLoop, task: "asyncio.Task[Any]") -> None:
        """Looks at the lock once it is due to have been renewed (its current
        expiry): the renewer has then either extended it (look again at the new
        expiry) or marked it lost (cancel the block's task). One timer per held
        lock and lock duration, only for blocks that opted in."""
        def check() -> None:
            self._watch = None
            st = _core.pl_message_lock_state(self._h)
            if st == _client.LOCK_LOST:
                self._cancelled_lost = True
                task.cancel()
            elif st == _client.LOCK_HELD:
                self._arm(loop, task)
        self._watch = loop.call_later(max(0.05, self.lock_remaining + 0.05), check)

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> bool:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._stop_renewing()
        self._client._drain_events()
        st = _core.pl_message_lock_state(self._h)
        if self._cancelled_lost and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            task = asyncio.current_task()
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()                  # this cancellation was ours, not the caller's
            raise LockLostError(f"lock on message {self.sequence_number} in {self.entity} was lost "
                                "while the block ran; the block was cancelled and nothing completed",
                                code=_errors.PL_ELOCKLOST) from exc
        if st == _client.LOCK_SETTLED and _core.pl_message_lost_reason(self._h) == _E_CLOSED:
            if exc_type is None:
                raise ClosedError(f"message {self.sequence_number} in {self.entity} was abandoned when "
                                  "the client closed while the block ran; it was not completed",
                                  code=_E_CLOSED)
            return False
        if st in (_client.LOCK_SETTLED, _client.LOCK_SETTLING):
            return False                    # the block settled it itself
        if st == _client.LOCK_UNKNOWN:
            if exc_type is None:
                raise OutcomeUnknownError(f"message {self.sequence_number} in {self.entity}: a settle "
                                          "made in the block had an unknown outcome", code=_errors.PL_EUNKNOWN)
            return False
        if st == _client.LOCK_LOST:
            if exc_type is None:
                raise LockLostError(f"lock on message {self.sequence_number} in {self.entity} was lost "
                                    "while the block ran; it was not completed", code=_errors.PL_ELOCKLOST)
            log.warning("lock on message %s in %s was lost while the handler failed",
                        self.sequence_number, self.entity)
            return False
        if exc_type is None:
            await self.complete()
            return False
        if issubclass(exc_type, asyncio.CancelledError) or not issubclass(exc_type, Exception):
            self._abandon_now()             # cancelled (or interrupted): no await here
            return False
        try:
            await self.abandon()
        except Error as e:
            log.warning("abandon of message %s after a handler error failed: %s", self.sequence_number, e)
        return False

    def __repr__(self) -> str:
        return "<peeklock.aio" + super().__repr__()[len("<peeklock"):]


class _Receive:
    """What ``client.peek_lock()`` returns: await it for the message (or None),
    or use it with ``async with`` to hold the lock for the block."""

    __slots__ = ("_client", "_entity", "_timeout", "_max_renew", "_cancel_on_lost", "_msg")

    def __init__(self, client: "Client", entity: str, timeout: int, max_renew: Optional[float],
                 cancel_on_lost: bool) -> None:
        self._client = client
        self._entity = entity
        self._timeout = timeout
        self._max_renew = max_renew
        self._cancel_on_lost = cancel_on_lost
        self._msg: Optional[Message] = None

    def __await__(self) -> Generator[Any, None, Optional[Message]]:
        return self._client._peek_lock(self._entity, self._timeout, self._max_renew,
                                       self._cancel_on_lost).__await__()

    async def __aenter__(self) -> Optional[Message]:
        self._msg = await self._client._peek_lock(self._entity, self._timeout, self._max_renew,
                                                  self._cancel_on_lost)
        if self._msg is not None:
            await self._msg.__aenter__()
        return self._msg

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> bool:
        if self._msg is None:
            return False
        return await self._msg.__aexit__(exc_type, exc, tb)


def _outgoing(body: Union[Body, OutgoingMessage], properties: Optional[Mapping[str, PropertyValue]],
              kwargs: Dict[str, Any]) -> Any:
    if isinstance(body, OutgoingMessage):
        if properties is not None or kwargs:
            raise TypeError("pass either an OutgoingMessage or keyword properties, not both")
        return body._build()
    return OutgoingMessage(body, properties=properties, **kwargs)._build()


class Client:
    """An asyncio Service Bus REST client: the constructor and options of
    :class:`peeklock.Client`. Use it from one event loop (the first it is used on)."""

    def __init__(self, endpoint: Optional[str] = None, *, key_name: Optional[str] = None,
                 key: Optional[str] = None, sas_token: Optional[str] = None,
                 token_provider: Optional[TokenProvider] = None,
                 connection_string: Optional[str] = None,
                 connect_timeout: float = 10.0, request_timeout: float = 30.0,
                 max_retries: int = 3, max_renew: float = _client._DEFAULT_MAX_RENEW,
                 pool_size: int = 0, ca_file: Optional[str] = None) -> None:
        self._sync = _client.Client(endpoint, key_name=key_name, key=key, sas_token=sas_token,
                                    token_provider=token_provider, connection_string=connection_string,
                                    connect_timeout=connect_timeout, request_timeout=request_timeout,
                                    max_retries=max_retries, max_renew=max_renew, pool_size=pool_size,
                                    ca_file=ca_file)
        self._engine = _Engine(self._sync._h)
        self.endpoint: str = self._sync.endpoint
        self.entity_path: Optional[str] = self._sync.entity_path
        self._closed = False

    @classmethod
    def from_connection_string(cls, connection_string: str, **kwargs: Any) -> "Client":
        _validate._check_str("connection_string", connection_string)
        return cls(connection_string=connection_string, **kwargs)

    @property
    def max_renew(self) -> float:
        return self._sync.max_renew

    def __repr__(self) -> str:
        return f"<peeklock.aio.Client endpoint={self.endpoint!r}{' closed' if self._closed else ''}>"

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the client is closed", code=_E_CLOSED)

    # ---- lifecycle ----
    async def aclose(self, unlock_held: bool = True) -> None:
        """Ends every pending operation (long polls at once, with ClosedError),
        stops the renewer (abandoning the locks it holds unless unlock_held is
        False) and releases the client."""
        if self._closed:
            return
        self._closed = True
        _core.pl_aio_close(self._engine._a)
        pending = self._engine.pending()
        if pending and self._engine._loop is not None:
            await asyncio.gather(*pending, return_exceptions=True)
        self._engine._detach()
        self._sync.close(unlock_held)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # ---- operations ----
    async def send(self, entity: str, body: Union[Body, OutgoingMessage] = b"", *,
                   properties: Optional[Mapping[str, PropertyValue]] = None, **kwargs: Any) -> None:
        """Sends one message (the arguments of :meth:`peeklock.Client.send`)."""
        entity = _validate._check_entity(entity)
        h = _outgoing(body, properties, kwargs)
        self._check_open()
        self._sync._refresh_token()
        _raise_for(await self._engine.run(_core.pl_aio_send, entity, h))

    async def send_batch(self, entity: str, messages: Iterable[Union[OutgoingMessage, Body]]) -> int:
        """Sends several messages in one request; returns how many."""
        entity = _validate._check_entity(entity)
        b, n = _client._build_batch(messages)
        self._check_open()
        self._sync._refresh_token()
        _raise_for(await self._engine.run(_core.pl_aio_send_batch, entity, b))
        return n

    def peek_lock(self, entity: str, timeout: float = 30, *, max_renew: Optional[float] = None,
                  cancel_on_lost: bool = False) -> _Receive:
        """Locks the next message, long-polling up to ``timeout`` seconds.
        ``await`` it for the Message (None when nothing came), or
        ``async with client.peek_lock(q) as msg:`` to hold the lock for the block.
        ``cancel_on_lost``: see :class:`Message`."""
        entity = _validate._check_entity(entity)
        t = _validate._check_timeout(timeout)
        mr = _validate._check_seconds(max_renew, "max_renew", optional=True)
        return _Receive(self, entity, t, mr, bool(cancel_on_lost))

    async def _peek_lock(self, entity: str, t: int, mr: Optional[float],
                         cancel_on_lost: bool = False) -> Optional[Message]:
        self._check_open()
        self._sync._refresh_token()
        res = await self._engine.run(_core.pl_aio_peek_lock, entity, t, peek=True)
        if res[5]:
            _client._warn_orphaned(entity)
        _raise_for(res)
        return Message(res[4], self, mr, cancel_on_lost) if res[4] is not None else None

    async def receive_and_delete(self, entity: str, timeout: float = 30) -> Optional[Message]:
        """Reads and deletes the next message (nothing to settle), or None."""
        entity = _validate._check_entity(entity)
        t = _validate._check_timeout(timeout)
        self._check_open()
        self._sync._refresh_token()
        res = await self._engine.run(_core.pl_aio_receive_and_delete, entity, t)
        _raise_for(res)
        return Message(res[4], self) if res[4] is not None else None

    async def messages(self, entity: str, *, timeout: float = 30,
                       max_renew: Optional[float] = None) -> AsyncIterator[Message]:
        """Yields peek-locked messages as they come, until the client closes
        (settle each, e.g. with ``async with msg:``)."""
        entity = _validate._check_entity(entity)
        t = _validate._check_timeout(timeout)
        mr = _validate._check_seconds(max_renew, "max_renew", optional=True)
        while not self._closed:
            try:
                msg = await self._peek_lock(entity, t, mr)
            except ClosedError:
                return
            if msg is not None:
                yield msg

    async def process(self, entity: str, handler: Callable[[Message], Awaitable[Any]], *,
                      concurrency: int = 4, max_renew: Optional[float] = None,
                      poll_timeout: float = 5, stop_event: Optional[asyncio.Event] = None,
                      max_messages: Optional[int] = None, handle_signals: bool = True,
                      drain_timeout: Optional[float] = None,
                      cancel_on_lost: bool = False) -> ProcessSummary:
        """Runs ``await handler(msg)`` on every message of ``entity`` with
        ``concurrency`` tasks, each message under ``async with`` (renewed by the C
        renewer, completed when the handler returns, abandoned when it raises).
        Stops on SIGINT/SIGTERM (unless ignored at start), ``stop_event`` or
        ``max_messages``: pending receives are cancelled at once, handlers under
        way finish (a second signal, or ``drain_timeout``, cancels them: their
        messages are abandoned). ``cancel_on_lost``: a handler whose lock is lost is
        cancelled (see :class:`Message`). Returns the run's summary."""
        entity = _validate._check_entity(entity)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive int")
        t = _validate._check_timeout(poll_timeout, "poll_timeout")
        mr = _validate._check_seconds(max_renew, "max_renew", optional=True)
        loop = asyncio.get_running_loop()
        summary = ProcessSummary(entity=entity)
        stop = stop_event if stop_event is not None else asyncio.Event()
        signals = 0
        handling: Set["asyncio.Task[None]"] = set()
        receiving: Set["asyncio.Task[None]"] = set()
        started = time.monotonic()
        renewed0 = self._sync.stats()["events"]["renewed"]

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if not summary.stopped_by:
                summary.stopped_by = "signal"
            log.info("signal: draining (%d in flight)", summary.in_flight)
            stop.set()
            for task in list(receiving):
                task.cancel()
            if signals > 1:
                for task in list(handling):
                    task.cancel()

        async def worker() -> None:
            me = asyncio.current_task()
            assert me is not None
            while not stop.is_set():
                if max_messages is not None and summary.received >= max_messages:
                    if not summary.stopped_by:
                        summary.stopped_by = "max_messages"
                    stop.set()
                    return
                receiving.add(me)
                try:
                    msg = await self._peek_lock(entity, t, mr, cancel_on_lost)
                except asyncio.CancelledError:
                    if stop.is_set():
                        return                  # the drain cancelled this receive
                    raise
                except ClosedError:
                    return
                except Error as e:
                    summary.errors += 1
                    summary.last_errors = (summary.last_errors + [str(e)])[-5:]
                    await asyncio.sleep(min(1.0, 0.05 * summary.errors))
                    continue
                finally:
                    receiving.discard(me)
                if msg is None:
                    continue
                summary.received += 1
                summary.in_flight += 1
                if msg.delivery_count > 1:
                    summary.redelivered += 1
                handling.add(me)
                try:
                    async with msg:
                        r = handler(msg)
                        if inspect.isawaitable(r):
                            await r
                    summary.processed += 1
                except LockLostError:
                    summary.lost += 1
                except asyncio.CancelledError:
                    summary.abandoned_on_drain += 1
                    if not stop.is_set():
                        raise
                    return
                except Exception as e:
                    if msg.lock_lost:
                        summary.lost += 1
                    else:
                        summary.failed += 1
                    summary.last_errors = (summary.last_errors + [f"{type(e).__name__}: {e}"])[-5:]
                finally:
                    handling.discard(me)
                    summary.in_flight -= 1

        old: Dict[signal.Signals, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:   # ignored at start: stays so
                    old[sig] = signal.getsignal(sig)
                    loop.add_signal_handler(sig, on_signal)

        async def watch_stop() -> None:
            await stop.wait()
            if not summary.stopped_by:
                summary.stopped_by = "stop_event"
            for task in list(receiving):
                task.cancel()
            if drain_timeout is not None:
                await asyncio.sleep(drain_timeout)
                for task in list(handling):
                    task.cancel()

        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        watcher = asyncio.ensure_future(watch_stop())
        try:
            await asyncio.gather(*workers)
        finally:
            watcher.cancel()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, watcher, return_exceptions=True)
            for sig, h in old.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, h)
        summary.elapsed = time.monotonic() - started
        summary.renewals = self._sync.stats()["events"]["renewed"] - renewed0
        return summary

    def stats(self) -> Dict[str, Any]:
        """The counters of :meth:`peeklock.Client.stats`, plus the async engine's under "aio"."""
        s: Dict[str, Any] = dict(self._sync.stats())
        s["aio"] = self._engine.stats()
        return s
