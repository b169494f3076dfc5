# Stubs for the lazily loaded public surface of peeklock (see __init__.py).
from .client import Client as Client, Message as Message, OutgoingMessage as OutgoingMessage
from .client import MessageList as MessageList, ConnectionString as ConnectionString
from .client import sas_token as sas_token, parse_connection_string as parse_connection_string
from .client import version as version
from .processor import ProcessSummary as ProcessSummary, Processor as Processor
from .errors import (
    AuthError as AuthError,
    BadRequestError as BadRequestError,
    ClosedError as ClosedError,
    ConflictError as ConflictError,
    ConnectionError as ConnectionError,
    EntityNotFoundError as EntityNotFoundError,
    Error as Error,
    HTTPError as HTTPError,
    InternalError as InternalError,
    InvalidArgument as InvalidArgument,
    LockLostError as LockLostError,
    MessageTooLargeError as MessageTooLargeError,
    OutcomeUnknownError as OutcomeUnknownError,
    ProtocolError as ProtocolError,
    ServerError as ServerError,
    StateError as StateError,
    ThrottledError as ThrottledError,
    TimeoutError as TimeoutError,
)

__version__: str
