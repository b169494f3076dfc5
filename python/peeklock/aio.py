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
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Generator,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    Type,
    Union,
)

from . import _core
from . import _validate
from ._held import hold_failures
from . import client as _client
from . import errors as _errors
from ._auth import TokenProvider
from .client import Body, OutgoingMessage
from ._outgoing import SendOptions, _build_batch, _outgoing_handle, _send_signature
from .errors import ClosedError, Error, LockLostError
from . import processor as _processor
from .processor import ProcessSummary, RetryDelay
from ._spans import no_context

if TYPE_CHECKING:
    from ._outgoing import Unpack

__all__ = ["Client", "Message", "ProcessSummary"]

log = logging.getLogger("peeklock.aio")

_E_CLOSED = _errors.PL_ECLOSED
# what a completion that failed, was retried or orphaned a lock resolves its future
# with (pl_py_aio_resolve): (code, http_status, retryable, text, message handle,
# orphaned, attempts); any other resolves it with the message handle or None
_Result = Tuple[int, int, int, str, Any, int, int]
# the operation each submit function starts, as the log records name it
_OPERATIONS: Dict[Any, str] = {
    _core.pl_aio_send: "send",
    _core.pl_aio_send_batch: "send_batch",
    _core.pl_aio_peek_lock: "peek_lock",
    _core.pl_aio_receive_and_delete: "receive_and_delete",
    _core.pl_aio_renew_lock: "renew_lock",
    _core.pl_aio_unlock: "unlock",
    _core.pl_aio_complete: "complete",
    _core.pl_aio_finish: "settle",
}
_running_loop = asyncio.get_running_loop
_submit = _core.pl_py_aio_submit


def _being_cancelled() -> bool:
    """Whether the running task is being cancelled (always so before Python 3.11,
    which cannot tell)."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    return cancelling is None or cancelling() > 0


class _Engine:
    """One client's C engine and its registration with one event loop."""

    def __init__(self, sync: _client.Client) -> None:
        self._sync = sync
        self._a: Any = _core.pl_aio_new(sync._h)
        self._fd: int = _core.pl_aio_fd(self._a)
        self._futs: Dict[int, "asyncio.Future[Any]"] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.closed = False

    def _attach(self) -> None:
        """Watches the fd on the running loop, the first time; refuses another loop."""
        loop = _running_loop()
        if self._loop is None:
            # the completions are resolved in C, by the reader itself
            loop.add_reader(self._fd, _core.pl_py_aio_resolve, self._a, self._futs, self._orphan)
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a peeklock.aio.Client serves the event loop it was first used on")

    def _detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._loop = None

    def _orphan(self, h: Any, peek: bool) -> None:
        """A message that reached an operation nobody waits for any more."""
        if peek:
            try:
                _core.pl_aio_unlock_detached(self._a, h)
            except Error as e:
                log.warning("could not abandon a lock that reached a cancelled receive: %s", e)
        else:
            log.error(
                "receive_and_delete was cancelled after message %s was deleted; it is lost to the caller",
                _core.pl_message_sequence_number(h),
            )

    async def run(self, submit: Callable[..., int], *args: Any, id_: int = 0) -> Any:
        """Submits and waits for the completion; given id_, waits for that operation,
        which submit (called with args) started. Returns the message handle (or
        None); raises the operation's error (ClosedError once the client closed)."""
        if not id_:
            if self.closed:
                raise ClosedError("the client is closed", code=_E_CLOSED)
            if self._sync._token_provider is not None:
                self._sync._refresh_token()
        if self._loop is None:
            self._attach()
        if id_:
            try:
                fut: "asyncio.Future[Any]" = asyncio.Future()
                if fut.get_loop() is not self._loop:
                    self._attach()  # (raises)
                self._futs[id_] = fut
            except MemoryError:  # under way, and no completion can find a future
                _core.pl_py_aio_lost(self._a, id_, submit)  # cancels; raises what the caller may assume
        else:
            # the future is made on the loop that runs (asyncio.Future, as the default
            # loop's create_future makes it, but without its Python frame): refused
            # when that is not self._loop, without a look-up of the running loop of
            # its own (each makes a getpid() system call)
            id_, fut = _submit(self._futs, asyncio.Future, self._loop, submit, self._a, *args)
        try:
            res = await fut
        except MemoryError:
            if fut.done():
                raise  # (the operation's own answer)
            # the await itself failed (out of memory): under way, and nobody waits
            if self._futs.get(id_) is fut:
                del self._futs[id_]
            _core.pl_py_aio_lost(self._a, id_, submit)  # cancels; raises what the caller may assume
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # the answer came, then this task was cancelled before it resumed
                res = fut.result()
                h = res[4] if type(res) is tuple else res
                if h is not None:
                    self._orphan(h, submit is _core.pl_aio_peek_lock)
            elif fut.cancelled() and not _being_cancelled():
                # not this task's cancellation: the reader could resolve the future no
                # other way (out of memory); the operation ended, its answer is lost
                _core.pl_py_aio_lost(self._a, 0, submit)  # raises what the caller may assume
            else:
                try:
                    _core.pl_aio_cancel(self._a, id_)
                except Error:
                    pass  # on the wire: its completion says what happened; the reader drops it
            raise
        if type(res) is tuple:
            return self._unusual(res, submit, args)
        return res

    def _unusual(self, res: _Result, submit: Callable[..., int], args: Tuple[Any, ...]) -> Any:
        """A completion that failed, was retried or orphaned a lock: logged as a
        blocking call's is (the engine calls no hook), then raised or returned."""
        code, status, retryable, text, h, orphaned, attempts = res
        if code < 0 or attempts > 1:
            entity = args[0] if isinstance(args[0], str) else str(_core.pl_message_entity(args[0]))
            _client._log_completion(_OPERATIONS.get(submit, "request"), entity, code, status, attempts, text)
        if orphaned and submit is _core.pl_aio_peek_lock:
            _client._warn_orphaned(args[0])
        if code < 0:
            raise _errors.from_code(code, status, retryable, text or None)
        return h

    async def wind_down(self, limit: float = 10.0) -> None:
        """Waits (up to ``limit`` seconds) for the work the engine finishes on its
        own: cancelled operations not yet ended, and the unlocks of locks that
        reached nobody (a cancelled receive or handler). The engine says when it is
        done with a completion on its fd (pl_aio_idle, its time limit kept by the
        engine's thread): the loop runs nothing for it until then."""
        if self.closed:
            return
        if self._loop is None:
            self._attach()
        try:
            id_, fut = _submit(self._futs, asyncio.Future, self._loop, _core.pl_aio_idle, self._a, int(limit * 1000))
        except ClosedError:
            return  # closing: aclose() waits for what is pending
        try:
            res = await fut
        except asyncio.CancelledError:
            try:
                _core.pl_aio_cancel(self._a, id_)  # its completion finds the future done: dropped
            except Error:
                pass  # already queued
            raise
        if type(res) is tuple:  # (code, ...): PL_ETIMEOUT
            log.warning("cancelled receives and their unlocks still under way after %.0f s", limit)

    def pending(self) -> List["asyncio.Future[Any]"]:
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

    def __init__(
        self, handle: Any, aio: "Client", max_renew: Optional[float] = None, cancel_on_lost: bool = False
    ) -> None:
        super().__init__(handle, aio._sync, max_renew)
        self._aio = aio
        self.cancel_on_lost = cancel_on_lost
        self._watch: Optional[Callable[[], None]] = None
        self._cancelled_lost = False

    async def renew_lock(self) -> None:  # type: ignore[override]
        """Renews the lock once, now (``async with`` does this for you)."""
        await self._aio._engine.run(_core.pl_aio_renew_lock, self._h)

    async def complete(self) -> None:  # type: ignore[override]
        """Deletes the message. LockLostError when the lock was lost,
        StateError when already settled, OutcomeUnknownError when unknown."""
        self._stop_renewing()
        await self._aio._engine.run(_core.pl_aio_complete, self._h)

    async def abandon(self) -> None:  # type: ignore[override]
        """Releases the lock so the message is delivered again at once."""
        self._stop_renewing()
        await self._aio._engine.run(_core.pl_aio_unlock, self._h)

    unlock = abandon  # type: ignore[assignment]

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
        """Cancels the block's task as soon as the renewer reports the lock lost:
        the client's events thread calls back, which wakes the loop (no timer,
        nothing at all while the lock is held)."""
        key = (self.entity, self.sequence_number)
        watches = self._client._lost_watch

        def lost() -> None:  # on the client's events thread
            try:
                loop.call_soon_threadsafe(check)
            except RuntimeError:  # the loop has closed
                pass

        def check() -> None:  # on the loop
            if self._watch is not lost:
                return  # the block has ended
            st = _core.pl_message_lock_state(self._h)
            if st == _client.LOCK_LOST:
                self._disarm()
                self._cancelled_lost = True
                task.cancel()
            elif st == _client.LOCK_HELD:
                watches[key] = lost  # still held: it was another holder's lock

        self._watch = lost
        watches[key] = lost
        check()  # lost before it was watched

    def _disarm(self) -> None:
        if self._watch is not None:
            key = (self.entity, self.sequence_number)
            if self._client._lost_watch.get(key) is self._watch:
                del self._client._lost_watch[key]
            self._watch = None

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool:
        # the C workflow of the blocking client's __exit__ (pl_renewer_finish), without
        # blocking: pl_aio_finish settles by the block's result unless the lock was
        # settled, lost or abandoned by a close meanwhile; pl_finish_outcome says which
        self._disarm()
        self._client._drain_events()
        if self._cancelled_lost and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self._stop_renewing()
            task = asyncio.current_task()
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None:
                uncancel()  # this cancellation was ours, not the caller's
            raise LockLostError(
                f"lock on message {self.sequence_number} in {self.entity} was lost "
                "while the block ran; the block was cancelled and nothing completed",
                code=_errors.PL_ELOCKLOST,
            ) from exc
        ok = exc_type is None
        if exc_type is not None and (
            issubclass(exc_type, asyncio.CancelledError) or not issubclass(exc_type, Exception)
        ):
            # cancelled (or interrupted): no await here; a held lock is abandoned in the background
            if _core.pl_message_lock_state(self._h) == _client.LOCK_HELD:
                self._abandon_now()
                return False
            self._stop_renewing()
            outcome = _core.pl_finish_outcome(self._h, 0)
        else:
            c = self._aio
            c._engine._attach()  # another loop is refused before anything is settled
            self._in_renewer = False
            try:
                if not c._closed:  # (closed: a lock still held is refused with ClosedError)
                    c._sync._refresh_token()
                id_ = _core.pl_aio_finish(c._engine._a, self._h, self._client._renewer_handle, ok)
                if id_:
                    await c._engine.run(_core.pl_aio_finish, self._h, id_=id_)
            except Error as e:
                if ok:
                    raise
                log.warning("abandon of message %s after a handler error failed: %s", self.sequence_number, e)
                return False
            outcome = _core.pl_finish_outcome(self._h, id_ != 0)
        if ok:  # closed, unknown or lost: raised in the core's words
            _core.pl_finish_error(self._h, outcome)
        elif outcome == _client._FINISH_LOST:
            log.warning("lock on message %s in %s was lost while the handler failed", self.sequence_number, self.entity)
        return False

    def __repr__(self) -> str:
        return "<peeklock.aio" + super().__repr__()[len("<peeklock") :]


class _Receive:
    """What ``client.peek_lock()`` returns: await it for the message (or None),
    or use it with ``async with`` to hold the lock for the block."""

    __slots__ = ("_client", "_entity", "_timeout", "_max_renew", "_cancel_on_lost", "_msg")

    def __init__(
        self, client: "Client", entity: str, timeout: int, max_renew: Optional[float], cancel_on_lost: bool
    ) -> None:
        self._client = client
        self._entity = entity
        self._timeout = timeout
        self._max_renew = max_renew
        self._cancel_on_lost = cancel_on_lost
        self._msg: Optional[Message] = None

    def __await__(self) -> Generator[Any, None, Optional[Message]]:
        return self._client._peek_lock(self._entity, self._timeout, self._max_renew, self._cancel_on_lost).__await__()

    async def __aenter__(self) -> Optional[Message]:
        self._msg = await self._client._peek_lock(self._entity, self._timeout, self._max_renew, self._cancel_on_lost)
        if self._msg is not None:
            await self._msg.__aenter__()
        return self._msg

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool:
        if self._msg is None:
            return False
        return await self._msg.__aexit__(exc_type, exc, tb)


class Client:
    """An asyncio Service Bus REST client: the constructor and options of
    :class:`peeklock.Client`. Use it from one event loop (the first it is used on)."""

    def __init__(
        self,
        endpoint: Optional[str] = None,
        *,
        key_name: Optional[str] = None,
        key: Optional[str] = None,
        sas_token: Optional[str] = None,
        token_provider: Optional[TokenProvider] = None,
        connection_string: Optional[str] = None,
        connect_timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        max_retries: Optional[int] = None,
        max_renew: float = _validate._DEFAULT_MAX_RENEW,
        pool_size: int = 0,
        ca_file: Optional[str] = None,
    ) -> None:
        self._sync = _client.Client(
            endpoint,
            key_name=key_name,
            key=key,
            sas_token=sas_token,
            token_provider=token_provider,
            connection_string=connection_string,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            max_retries=max_retries,
            max_renew=max_renew,
            pool_size=pool_size,
            ca_file=ca_file,
        )
        self._engine = _Engine(self._sync)
        self.endpoint: str = self._sync.endpoint
        self.entity_path: Optional[str] = self._sync.entity_path
        self._closed = False

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        *,
        token_provider: Optional[TokenProvider] = None,
        connect_timeout: Optional[float] = None,
        request_timeout: Optional[float] = None,
        max_retries: Optional[int] = None,
        max_renew: float = _validate._DEFAULT_MAX_RENEW,
        pool_size: int = 0,
        ca_file: Optional[str] = None,
    ) -> "Client":
        _validate._check_str("connection_string", connection_string, empty=True)
        return cls(
            connection_string=connection_string,
            token_provider=token_provider,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            max_retries=max_retries,
            max_renew=max_renew,
            pool_size=pool_size,
            ca_file=ca_file,
        )

    @property
    def max_renew(self) -> float:
        return self._sync.max_renew

    def __repr__(self) -> str:
        return f"<peeklock.aio.Client endpoint={self.endpoint!r}{' closed' if self._closed else ''}>"

    # ---- lifecycle ----
    async def aclose(self, unlock_held: bool = True) -> None:
        """Ends every pending operation (long polls at once, with ClosedError),
        stops the renewer (abandoning the locks it holds unless unlock_held is
        False) and releases the client."""
        if self._closed:
            return
        self._closed = self._engine.closed = True
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
    @_send_signature
    async def send(self, entity: str, body: Union[Body, OutgoingMessage] = b"", **options: Unpack[SendOptions]) -> None:
        """Sends one message (the arguments of :meth:`peeklock.Client.send`)."""
        entity = _validate._check_entity(entity)
        h = _outgoing_handle(body, options, "Client.send")
        await self._engine.run(_core.pl_aio_send, entity, h)

    async def send_batch(self, entity: str, messages: Iterable[Union[OutgoingMessage, Body]]) -> int:
        """Sends several messages in one request; returns how many."""
        entity = _validate._check_entity(entity)
        b, n = _build_batch(messages)
        await self._engine.run(_core.pl_aio_send_batch, entity, b)
        return n

    def peek_lock(
        self,
        entity: str,
        timeout: float = _validate._DEFAULT_TIMEOUT,
        *,
        max_renew: Optional[float] = None,
        cancel_on_lost: bool = False,
    ) -> _Receive:
        """Locks the next message, long-polling up to ``timeout`` seconds.
        ``await`` it for the Message (None when nothing came), or
        ``async with client.peek_lock(q) as msg:`` to hold the lock for the block.
        ``cancel_on_lost``: see :class:`Message`."""
        entity = _validate._check_entity(entity)
        t = _validate._check_timeout(timeout)
        mr = None if max_renew is None else _validate._check_max_renew(max_renew)
        return _Receive(self, entity, t, mr, bool(cancel_on_lost))

    async def _peek_lock(
        self, entity: str, t: int, mr: Optional[float], cancel_on_lost: bool = False
    ) -> Optional[Message]:
        h = await self._engine.run(_core.pl_aio_peek_lock, entity, t)
        return Message(h, self, mr, cancel_on_lost) if h is not None else None

    async def receive_and_delete(self, entity: str, timeout: float = _validate._DEFAULT_TIMEOUT) -> Optional[Message]:
        """Reads and deletes the next message (nothing to settle), or None."""
        entity = _validate._check_entity(entity)
        t = _validate._check_timeout(timeout)
        h = await self._engine.run(_core.pl_aio_receive_and_delete, entity, t)
        return Message(h, self) if h is not None else None

    async def messages(
        self, entity: str, *, timeout: float = _validate._DEFAULT_TIMEOUT, max_renew: Optional[float] = None
    ) -> AsyncIterator[Message]:
        """Yields peek-locked messages as they come, until the client closes
        (settle each, e.g. with ``async with msg:``)."""
        entity = _validate._check_entity(entity)
        t = _validate._check_timeout(timeout)
        mr = _validate._check_max_renew(max_renew, optional=True)
        while not self._closed:
            try:
                msg = await self._peek_lock(entity, t, mr)
            except ClosedError:
                return
            if msg is not None:
                yield msg

    async def process(
        self,
        entity: str,
        handler: Union[Callable[[Message], Awaitable[Any]], Callable[[List[Message]], Awaitable[Any]]],
        *,
        concurrency: int = _validate._DEFAULT_CONCURRENCY,
        max_renew: Optional[float] = None,
        poll_timeout: float = _validate._DEFAULT_POLL_TIMEOUT,
        stop_event: Optional[asyncio.Event] = None,
        max_messages: Optional[int] = None,
        idle_timeout: Optional[float] = None,
        handle_signals: bool = True,
        drain_timeout: Optional[float] = None,
        cancel_on_lost: bool = False,
        retry_delay: RetryDelay = _validate._DEFAULT_RETRY,
        on_error: Optional[Callable[[Message, BaseException], Any]] = None,
        batch: Optional[int] = None,
        max_wait: float = _validate._DEFAULT_MAX_WAIT,
    ) -> ProcessSummary:
        """Runs ``await handler(msg)`` on every message of ``entity`` with
        ``concurrency`` tasks, each message under ``async with`` (renewed by the C
        renewer, completed when the handler returns, abandoned when it raises,
        after ``retry_delay`` as in :class:`peeklock.Client.process`; ``on_error(msg, exc)``
        first). With ``batch=N`` the handler takes a list of up to N locked
        messages (fewer once ``max_wait`` seconds passed after the first), settles
        some itself or returns a mapping message (or sequence number) ->
        "complete" | "abandon"; the rest are completed when it returns and abandoned
        when it raises or is cancelled.
        Stops on SIGINT/SIGTERM (unless ignored at start) or ``stop_event``:
        pending receives are cancelled at once (a batch being collected is given
        back), handlers under way finish (a second signal, or ``drain_timeout``,
        cancels them: their messages are abandoned). ``max_messages``: each
        receive claims one of them first (the core's pl_run), so no more are
        received however many tasks wait; the run ends when their handlers finish.
        ``idle_timeout``: the run stops as on ``stop_event`` once no message is in
        flight and none was received or finished for that many seconds.
        ``cancel_on_lost``: a handler whose lock is lost is cancelled (see
        :class:`Message`; single messages only). A failed receive pauses the worker
        (1 s doubling per consecutive failure, at most 10 s: the core's
        ``pl_receive_pause_ms``) unless waiting cannot mend it (a missing entity,
        a refused key): then the run ends as on a stop and raises that error with
        ``.summary`` attached. Returns the run's summary."""
        o = _processor._check_options(
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
        if batch is not None and cancel_on_lost:
            raise ValueError("cancel_on_lost applies to single-message handlers, not batches")
        run = _Processor(
            self,
            o,
            stop=stop_event if stop_event is not None else asyncio.Event(),
            drain_timeout=_validate._check_seconds(drain_timeout, "drain_timeout", optional=True),
            cancel_on_lost=cancel_on_lost,
        )
        return await run.run(handle_signals)

    def stats(self) -> Dict[str, Any]:
        """The counters of :meth:`peeklock.Client.stats`, plus the async engine's under "aio"."""
        s: Dict[str, Any] = dict(self._sync.stats())
        s["aio"] = self._engine.stats()
        return s


def _cancelled(m: Message, was: Optional[str], applied: int = 0) -> int:
    """How a message whose handler was cancelled ended (PL_RUN_F_*), by ``was``,
    its state at the cancellation (None: cancelled after the handler, in its
    retry delay or its settle): one the handler (or its returned mapping)
    settled, or was settling, stays settled by the handler; else as a message
    given back (processor._given_back, once the abandon of one still held was
    sent): its lock lost, the outcome unknown, the abandon failed, or drained."""
    if was in ("settled", "settling"):
        return applied | _core.PL_RUN_F_BY_HANDLER
    return _processor._given_back(m)


class _Processor:
    """One run of :meth:`Client.process` on the event loop: worker tasks that
    receive, hold and settle, as peeklock.processor does with threads (the pure
    parts — a batch's receive timeouts, the handler's returned mapping, the
    outcomes and their counts, the retry delay — are that module's)."""

    def __init__(
        self,
        client: "Client",
        o: "_processor._Options",
        *,
        stop: asyncio.Event,
        drain_timeout: Optional[float],
        cancel_on_lost: bool,
    ) -> None:
        self.client = client
        self.entity = o.entity
        self.handler = o.handler
        self.concurrency = o.concurrency
        self.poll_timeout = o.poll_timeout
        self.max_renew = o.max_renew
        self.stop = stop
        self.drain_timeout = drain_timeout
        self.cancel_on_lost = cancel_on_lost
        self.retry_delay = o.retry_delay
        self.on_error = o.on_error
        self.batch = o.batch
        self.max_wait = o.max_wait
        self.summary = ProcessSummary(entity=o.entity)
        self.signals = 0
        # pl_run: claims, in flight, idle, why it stopped
        self.run_ = _processor._new_run(o.max_messages, o.idle_timeout)
        self.idle_timeout = o.idle_timeout
        self.finished = asyncio.Event()  # a message was finished (watch_idle)
        self.handling: Set["asyncio.Task[None]"] = set()
        self.receiving: Set["asyncio.Task[None]"] = set()
        self.failures: Dict["asyncio.Task[None]", int] = {}  # a worker's consecutive failed receives

    # ---- stopping ----
    def stop_by(self, reason: int) -> None:
        _processor._stop(self.run_, self.summary, reason)

    def claim(self) -> bool:
        """A claim on the next message (pl_run_claim): False once max_messages
        are claimed or the run stops."""
        return _core.pl_run_claim(self.run_, 1) == 1

    def finished_one(self, how: int) -> None:
        """A received message is done with, how it ended (PL_RUN_F_*): counted
        by the run (pl_run_finish)."""
        _processor._finished(self.run_, how)
        self.finished.set()

    async def watch_idle(self) -> None:
        """Sets stop once the run is idle (pl_run): waits as long as the core says
        it cannot be sooner, or, with a message in flight, for one to finish."""
        while not self.stop.is_set():
            ms = _core.pl_run_idle_ms(self.run_, _core.pl_now_mono_ms())
            if ms == 0:
                self.stop_by(_core.PL_RUN_IDLE)
                self.stop.set()
                return
            self.finished.clear()
            try:
                await asyncio.wait_for(self.finished.wait(), None if ms < 0 else ms / 1000)
            except asyncio.TimeoutError:
                pass

    def on_signal(self) -> None:
        self.signals += 1
        self.stop_by(_core.PL_RUN_SIGNAL)
        log.info("signal: draining (%d in flight)", _core.pl_run_in_flight(self.run_))
        self.stop.set()
        for task in list(self.receiving):
            task.cancel()
        if self.signals > 1:
            for task in list(self.handling):
                task.cancel()

    async def watch_stop(self) -> None:
        await self.stop.wait()
        self.stop_by(_core.PL_RUN_STOP_EVENT)
        for task in list(self.receiving):
            task.cancel()
        if self.drain_timeout is not None:
            await asyncio.sleep(self.drain_timeout)
            for task in list(self.handling):
                task.cancel()

    async def run(self, handle_signals: bool) -> ProcessSummary:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        renewed0 = self.client._sync.stats()["events"]["renewed"]
        old: Dict[signal.Signals, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:  # ignored at start: stays so
                    old[sig] = signal.getsignal(sig)
                    loop.add_signal_handler(sig, self.on_signal)
        work = self.batch_worker if self.batch is not None else self.worker
        workers = [asyncio.ensure_future(work()) for _ in range(self.concurrency)]
        watchers = [asyncio.ensure_future(self.watch_stop())]
        if self.idle_timeout is not None:
            watchers.append(asyncio.ensure_future(self.watch_idle()))
        try:
            await asyncio.gather(*workers)
        finally:
            try:
                for task in watchers + workers:
                    task.cancel()
                await asyncio.gather(*workers, *watchers, return_exceptions=True)
            finally:
                for sig, h in old.items():
                    loop.remove_signal_handler(sig)
                    signal.signal(sig, h)
                self.stop.set()  # the caller's stop_event: set at the end of every run, as in Processor
        if not self.client._closed:  # a normal return: the drain's background unlocks are done
            await self.client._engine.wind_down()
        s = self.summary
        self.stop_by(_core.PL_RUN_CLOSED if self.client._closed else _core.PL_RUN_STOPPED)
        _processor._show(self.run_, s)  # (the counts are the run's, shown when read)
        s.elapsed = time.monotonic() - started
        s.renewals = self.client._sync.stats()["events"]["renewed"] - renewed0
        return _processor._raise_error(s)

    # ---- one message at a time ----
    async def worker(self) -> None:
        s = self.summary
        me = asyncio.current_task()
        assert me is not None
        while not self.stop.is_set():
            if not self.claim():
                return  # the others receive (or handle) the last claimed messages
            msg = await self.receive(me, self.poll_timeout)
            if msg is None:
                if self.client._closed:
                    return
                continue
            self.handling.add(me)
            handler_failed = False
            before = _core.PL_LOCK_HELD  # its lock state when the handler returned or raised
            how = 0
            was: Optional[str] = None  # the message's state when the handler was cancelled
            try:
                async with msg:
                    try:
                        r = self.handler(msg)
                        if inspect.isawaitable(r):
                            await r
                    except asyncio.CancelledError:
                        was = msg.state  # (one still held, the block's exit abandons)
                        raise
                    except Exception as e:
                        handler_failed = True
                        before = _processor._lock_state(msg)
                        await self.failed(msg, e, [msg])
                        raise
                    before = _processor._lock_state(msg)
                how = _processor._how(msg, before, False)
            except asyncio.CancelledError:
                how = _cancelled(msg, was)
                if not self.stop.is_set():
                    raise
                return
            except Exception as e:
                if handler_failed or not isinstance(e, Error):
                    how = _processor._how(msg, before, True)
                else:  # the settle at the block's exit
                    if not isinstance(e, LockLostError):
                        _processor._remember(s, f"settle: {type(e).__name__}: {e}")
                    how = _processor._how(msg, before, False, e)
            finally:
                self.handling.discard(me)
                self.finished_one(how)

    async def receive(self, me: "asyncio.Task[None]", timeout: int) -> Optional[Message]:
        """One peek-lock on a claim the caller took, counted; None when nothing
        came, it failed (after a pause by the core's rule, or the run ends with
        it), the client closed or the drain cancelled it: the claim is then
        given back."""
        s = self.summary
        self.receiving.add(me)
        held = hold_failures()
        failed: Optional[Error] = None
        msg: Optional[Message] = None
        try:
            with held:
                msg = await self.client._peek_lock(self.entity, timeout, self.max_renew, self.cancel_on_lost)
        except asyncio.CancelledError:
            if self.stop.is_set():
                return None  # the drain cancelled this receive
            raise
        except ClosedError:
            return None
        except Error as e:
            failed = e
        finally:
            self.receiving.discard(me)
            if msg is None:
                _core.pl_run_unclaim(self.run_, 1)
        if failed is not None:
            self.failures[me] = self.failures.get(me, 0) + 1
            pause = _processor._receive_failed(self.run_, s, failed, held.records, self.failures[me])
            if pause < 0:
                self.stop_by(_core.PL_RUN_ERROR)
                self.stop.set()  # the other workers' receives are cancelled, handlers finish
            elif not self.stop.is_set():
                try:
                    await asyncio.wait_for(self.stop.wait(), pause)  # a drain cuts it short
                except asyncio.TimeoutError:
                    pass
            return None
        self.failures[me] = 0
        if msg is not None:
            _processor._received(self.run_, msg)
        return msg

    async def failed(self, msg: Message, exc: BaseException, msgs: List[Message]) -> None:
        """A handler raised: logged, on_error for each of ``msgs`` (awaited when
        it returns an awaitable), then ``msg``'s retry delay, the lock renewed,
        unless a drain starts."""
        delay = _processor._retry_seconds(self.retry_delay, msg)
        _processor._remember(self.summary, f"handler: {type(exc).__name__}: {exc}")
        _processor._log_failure(self.entity, msg, exc, delay)
        if self.on_error is not None:
            for m in msgs:
                try:
                    r = self.on_error(m, exc)
                    if inspect.isawaitable(r):
                        await r
                except Exception as e:
                    log.warning("on_error raised %s: %s", type(e).__name__, e, exc_info=True)
        if delay and msg.state == "held" and not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), delay)  # a drain cuts it short
            except asyncio.TimeoutError:
                pass

    # ---- batches ----
    async def batch_worker(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self.stop.is_set() and not self.client._closed:
            msgs, out = await self.collect(me)
            if msgs:
                await self.run_batch(me, msgs)
            elif out:
                return  # the others receive (or hold) the last claimed messages

    async def collect(self, me: "asyncio.Task[None]") -> Tuple[List[Message], bool]:
        """Up to ``batch`` messages, each held by the C renewer from its receipt:
        the first waits up to poll_timeout, the rest until max_wait after it.
        A drain (or a close) that begins meanwhile gives them back. And whether
        no claim was left for another (max_messages, or the run stops)."""
        assert self.batch is not None
        msgs: List[Message] = []
        deadline = 0.0
        out = False
        try:
            while not self.stop.is_set() and len(msgs) < self.batch:
                timeout = _processor._next_timeout(len(msgs), deadline, self.poll_timeout)
                if timeout is None:
                    break
                if not self.claim():
                    out = True
                    break
                msg = await self.receive(me, timeout)
                if msg is None:
                    if self.client._closed:
                        break
                    continue  # with messages: the batch closes at its deadline
                if not msgs:
                    deadline = time.monotonic() + self.max_wait
                with no_context():  # the batch's process spans do not nest
                    msg.__enter__()
                msgs.append(msg)
        except asyncio.CancelledError:
            self._give_back_now(msgs)  # cancelled from outside: no await
            raise
        if msgs and (self.stop.is_set() or self.client._closed):
            # nothing has run on them: given back at once
            await asyncio.gather(*(self._give_back(m) for m in msgs))
            return [], out
        return msgs, out

    async def _give_back(self, m: Message) -> None:
        try:
            await m.abandon()
        except Error as e:
            log.warning("abandon on drain of message %s: %s", m.sequence_number, e)
            _processor._remember(self.summary, f"abandon on drain: {e}")
        self.finished_one(_processor._given_back(m))

    def _give_back_now(self, msgs: List[Message]) -> None:
        for m in msgs:
            if m.state == "held":
                m._abandon_now()
            self.finished_one(_processor._given_back(m))

    async def run_batch(self, me: "asyncio.Task[None]", msgs: List[Message]) -> None:
        error: Optional[Exception] = None
        applied: Dict[Message, int] = {}
        done: Set[Message] = set()
        self.handling.add(me)
        try:
            try:
                r = self.handler(msgs)
                if inspect.isawaitable(r):
                    r = await r
                if isinstance(r, Mapping):
                    applied = await self.apply(msgs, r)
            except Exception as e:
                error = e
                unsettled = [m for m in msgs if not m.settled]
                if unsettled:
                    await self.failed(_processor._most_delivered(unsettled), e, unsettled)
            await asyncio.gather(*(self.finish(m, error, applied.get(m, 0), done) for m in msgs))
        except asyncio.CancelledError:
            # a second signal, drain_timeout or the caller: what is still held is
            # given back at once, without waiting
            for m in msgs:
                if m in done:
                    continue
                was = m.state
                if was == "held":
                    m._abandon_now()
                self.finished_one(_cancelled(m, was, applied.get(m, 0)))
            if not self.stop.is_set():
                raise
        finally:
            self.handling.discard(me)

    async def apply(self, msgs: List[Message], actions: Mapping[Any, str]) -> Dict[Message, int]:
        """The handler's returned mapping (checked whole first), each action
        applied on its own. Returns how each message ended (PL_RUN_F_*)."""
        plan = _processor._plan(msgs, actions)
        out: Dict[Message, int] = {}

        async def one(m: Message, action: str, settle: int) -> None:
            if m.settled:
                return
            try:
                await (m.complete() if settle == _core.PL_SETTLE_COMPLETE else m.abandon())
                out[m] = _processor._SETTLED[settle]
            except LockLostError:
                out[m] = _core.PL_RUN_F_LOST
            except Error as e:
                out[m] = _processor._settle_failed(e)  # (counted an error by the run)
                _processor._remember(self.summary, f"{action}: {e}")

        await asyncio.gather(*(one(m, a, settle) for m, a, settle in plan))
        return out

    async def finish(self, m: Message, error: Optional[Exception], applied: int, done: Set[Message]) -> None:
        """Settles what the handler left, as ``async with msg:`` does, and counts it."""
        before = _processor._lock_state(m)
        exit_error: Optional[Error] = None
        try:
            if error is None:
                await m.__aexit__(None, None, None)
            else:
                await m.__aexit__(type(error), error, error.__traceback__)
        except Error as e:
            exit_error = e
            if not isinstance(e, LockLostError):
                _processor._remember(self.summary, f"settle: {e}")
        done.add(m)
        self.finished_one(applied | _processor._how(m, before, error is not None, exit_error))
