"""arkor-trio: a trio-native client for Arkor fine-tuning runs.

``create_trainer(...)`` describes a run, ``Trainer.start()`` submits it, ``Trainer.wait()`` follows
the job's event stream and calls your lifecycle callbacks, ``Trainer.cancel()`` stops it on the
backend. See README.md and docs/ for the guarantees.
"""

from ._callbacks import Callbacks as Callbacks
from ._client import ArkorClient as ArkorClient
from ._contexts import CancelledContext as CancelledContext
from ._contexts import CheckpointContext as CheckpointContext
from ._contexts import CompletedContext as CompletedContext
from ._contexts import FailedContext as FailedContext
from ._contexts import LogContext as LogContext
from ._contexts import StartedContext as StartedContext
from ._errors import ApiError as ApiError
from ._errors import ArkorError as ArkorError
from ._errors import ConfigError as ConfigError
from ._errors import FrameTooLarge as FrameTooLarge
from ._errors import JobNotFound as JobNotFound
from ._errors import ReconnectsExhausted as ReconnectsExhausted
from ._errors import StreamError as StreamError
from ._errors import UpgradeRequired as UpgradeRequired
from ._feed import JobFeed as JobFeed
from ._feed_job import FeedStats as FeedStats
from ._feed_job import FeedSubscription as FeedSubscription
from ._infer import Infer as Infer
from ._job_stream import EventStream as EventStream
from ._models import Adapter as Adapter
from ._models import BlobDataset as BlobDataset
from ._models import ChatCompletion as ChatCompletion
from ._models import CheckpointSaved as CheckpointSaved
from ._models import DatasetSource as DatasetSource
from ._models import HuggingfaceDataset as HuggingfaceDataset
from ._models import JobConfig as JobConfig
from ._models import JobEvent as JobEvent
from ._models import Lora as Lora
from ._models import TrainingCancelled as TrainingCancelled
from ._models import TrainingCompleted as TrainingCompleted
from ._models import TrainingFailed as TrainingFailed
from ._models import TrainingJob as TrainingJob
from ._models import TrainingLog as TrainingLog
from ._models import TrainingResult as TrainingResult
from ._models import TrainingStarted as TrainingStarted
from ._models import UnknownEvent as UnknownEvent
from ._trainer import Trainer as Trainer
from ._trainer import create_trainer as create_trainer
from ._version import __version__ as __version__
from ._ws_stream import WebSocketEventStream as WebSocketEventStream
from .stream import CursorStore as CursorStore
from .stream import FileCursorStore as FileCursorStore
from .stream import MemoryCursorStore as MemoryCursorStore
from .stream import ReconnectPolicy as ReconnectPolicy
from .stream import StreamStats as StreamStats

__all__ = [
    "Adapter",
    "ApiError",
    "ArkorClient",
    "ArkorError",
    "BlobDataset",
    "Callbacks",
    "CancelledContext",
    "ChatCompletion",
    "CheckpointContext",
    "CheckpointSaved",
    "CompletedContext",
    "ConfigError",
    "CursorStore",
    "DatasetSource",
    "EventStream",
    "FailedContext",
    "FeedStats",
    "FeedSubscription",
    "FileCursorStore",
    "FrameTooLarge",
    "HuggingfaceDataset",
    "Infer",
    "JobConfig",
    "JobEvent",
    "JobFeed",
    "JobNotFound",
    "LogContext",
    "Lora",
    "MemoryCursorStore",
    "ReconnectPolicy",
    "ReconnectsExhausted",
    "StartedContext",
    "StreamError",
    "StreamStats",
    "Trainer",
    "TrainingCancelled",
    "TrainingCompleted",
    "TrainingFailed",
    "TrainingJob",
    "TrainingLog",
    "TrainingResult",
    "TrainingStarted",
    "UnknownEvent",
    "UpgradeRequired",
    "WebSocketEventStream",
    "__version__",
    "create_trainer",
]
