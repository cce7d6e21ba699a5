"""arkor-trio: a trio-native client for Arkor fine-tuning runs.

``create_trainer(...)`` describes a run, ``Trainer.start()`` submits it, ``Trainer.wait()`` follows
the job's event stream and calls your lifecycle callbacks, ``Trainer.cancel()`` stops it on the
backend. See README.md and docs/ for the guarantees.
"""

from ._errors import ApiError as ApiError
from ._errors import ArkorError as ArkorError
from ._errors import ConfigError as ConfigError
from ._errors import FrameTooLarge as FrameTooLarge
from ._errors import JobNotFound as JobNotFound
from ._errors import ReconnectsExhausted as ReconnectsExhausted
from ._errors import StreamError as StreamError
from ._errors import UpgradeRequired as UpgradeRequired
from ._version import __version__ as __version__
from .stream import Cursor as Cursor
from .stream import CursorStore as CursorStore
from .stream import Delivery as Delivery
from .stream import FileCursorStore as FileCursorStore
from .stream import Lease as Lease
from .stream import LeaseLost as LeaseLost
from .stream import MemoryCursorStore as MemoryCursorStore
from .stream import ReconnectPolicy as ReconnectPolicy
from .stream import StreamStats as StreamStats
from .trainer._callbacks import Callbacks as Callbacks
from .trainer._contexts import CancelledContext as CancelledContext
from .trainer._contexts import CheckpointContext as CheckpointContext
from .trainer._contexts import CompletedContext as CompletedContext
from .trainer._contexts import FailedContext as FailedContext
from .trainer._contexts import LogContext as LogContext
from .trainer._contexts import StartedContext as StartedContext
from .trainer._create import create_trainer as create_trainer
from .trainer._fleet import Fleet as Fleet
from .trainer._fleet import FleetStats as FleetStats
from .trainer._infer import Infer as Infer
from .trainer._trainer import Trainer as Trainer
from .wire._client import ArkorClient as ArkorClient
from .wire._codec import event_to_wire as event_to_wire
from .wire._feed import JobFeed as JobFeed
from .wire._feed_job import FeedStats as FeedStats
from .wire._feed_job import FeedSubscription as FeedSubscription
from .wire._feed_merged import MergedSubscription as MergedSubscription
from .wire._job_stream import EventStream as EventStream
from .wire._models import Adapter as Adapter
from .wire._models import BlobDataset as BlobDataset
from .wire._models import ChatCompletion as ChatCompletion
from .wire._models import CheckpointSaved as CheckpointSaved
from .wire._models import DatasetSource as DatasetSource
from .wire._models import HuggingfaceDataset as HuggingfaceDataset
from .wire._models import JobConfig as JobConfig
from .wire._models import JobEvent as JobEvent
from .wire._models import Lora as Lora
from .wire._models import TrainingCancelled as TrainingCancelled
from .wire._models import TrainingCompleted as TrainingCompleted
from .wire._models import TrainingFailed as TrainingFailed
from .wire._models import TrainingJob as TrainingJob
from .wire._models import TrainingLog as TrainingLog
from .wire._models import TrainingResult as TrainingResult
from .wire._models import TrainingStarted as TrainingStarted
from .wire._models import UnknownEvent as UnknownEvent
from .wire._ws_stream import WebSocketEventStream as WebSocketEventStream

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
    "Cursor",
    "CursorStore",
    "DatasetSource",
    "Delivery",
    "EventStream",
    "FailedContext",
    "FeedStats",
    "FeedSubscription",
    "FileCursorStore",
    "Fleet",
    "FleetStats",
    "FrameTooLarge",
    "HuggingfaceDataset",
    "Infer",
    "JobConfig",
    "JobEvent",
    "JobFeed",
    "JobNotFound",
    "Lease",
    "LeaseLost",
    "LogContext",
    "Lora",
    "MemoryCursorStore",
    "MergedSubscription",
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
    "event_to_wire",
]
