from __future__ import annotations

import arkor_trio


def test_all_is_sorted_and_complete():
    assert arkor_trio.__all__ == sorted(arkor_trio.__all__)
    public = {n for n in dir(arkor_trio) if not n.startswith("_")} | {"__version__"}
    submodules = {"sse", "notify", "server", "testing", "cli", "stream", "aio", "wire", "trainer"}
    assert set(arkor_trio.__all__) == public - submodules
    for name in arkor_trio.__all__:
        assert getattr(arkor_trio, name) is not None


def test_errors_form_the_documented_tree():
    a = arkor_trio
    assert issubclass(a.ConfigError, a.ArkorError)
    assert issubclass(a.JobNotFound, a.ApiError)
    assert issubclass(a.UpgradeRequired, a.ApiError)
    assert issubclass(a.ReconnectsExhausted, a.StreamError)
    assert issubclass(a.FrameTooLarge, a.StreamError)
    assert issubclass(a.StreamError, a.ArkorError)
    assert issubclass(a.ApiError, a.ArkorError)


def test_api_error_message():
    err = arkor_trio.ApiError(503, "busy", {"error": "busy"})
    assert str(err) == "busy (HTTP 503)"
    assert str(arkor_trio.ApiError(0, "cannot reach x")) == "cannot reach x"
