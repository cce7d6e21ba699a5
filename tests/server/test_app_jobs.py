"""Jobs on the local backend: create, list, get, cancel, and how runs end (fake engine)."""

from __future__ import annotations

import pytest

from .conftest import FAKE_MODEL, SCOPE, create_job, data_of, read_stream


async def test_create_returns_queued_job_in_wire_shape(http) -> None:
    job = await create_job(http, "first", gate="hold")
    assert job["status"] == "queued"
    assert job["name"] == "first"
    assert job["id"].startswith("job_")
    assert job["orgId"] == "org_local"
    assert job["projectId"] == "proj_default"
    assert job["config"] == {"model": FAKE_MODEL, "gate": "hold"}
    assert job["error"] is None
    assert job["createdAt"].endswith("Z")
    assert job["startedAt"] is None
    assert job["completedAt"] is None
    assert "artifacts" not in job


async def test_completed_job_has_artifacts_and_timestamps(http) -> None:
    job = await create_job(http, logs=2)
    frames = await read_stream(http, job["id"])
    assert [f["event"] for f in frames] == [
        "training.started",
        "training.log",
        "training.log",
        "checkpoint.saved",
        "training.completed",
        "end",
    ]
    got = (await http.get(f"/v1/jobs/{job['id']}", params=SCOPE)).json()["job"]
    assert got["status"] == "completed"
    assert got["artifacts"] == [{"pathname": "adapter.json"}]
    assert got["startedAt"] == data_of(frames[0])["timestamp"]
    assert got["completedAt"] == data_of(frames[4])["timestamp"]


async def test_list_is_newest_first_and_get_unknown_is_404(http) -> None:
    ids = [(await create_job(http, f"j{i}"))["id"] for i in range(3)]
    listed = (await http.get("/v1/jobs", params=SCOPE)).json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1]
    response = await http.get("/v1/jobs/job_nope", params=SCOPE)
    assert response.status_code == 404
    assert response.json() == {"error": "job job_nope not found"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([1, 2], None),
        ({"config": {"model": FAKE_MODEL}}, "name"),
        ({"name": "  ", "config": {"model": FAKE_MODEL}}, "name"),
        ({"name": "x", "config": "nope"}, "config"),
        ({"name": "x"}, "config"),
        ({"name": "x", "config": {}, "extra": 1}, "extra"),
        ({"name": "x", "config": {"model": "other/model"}}, "model"),
    ],
)
async def test_create_rejects_bad_bodies_naming_the_field(http, fake, body, field) -> None:
    response = await http.post("/v1/jobs", params=SCOPE, json=body)
    assert response.status_code == 400
    payload = response.json()
    assert isinstance(payload["error"], str)
    assert payload.get("field") == field
    assert fake.started == []


async def test_create_rejects_invalid_json(http) -> None:
    response = await http.post("/v1/jobs", params=SCOPE, content=b"{nope")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


async def test_cancel_running_job_ends_with_cancelled_event(http, fake) -> None:
    job = await create_job(http, gate="hold")
    async with http.stream("GET", f"/v1/jobs/{job['id']}/events/stream", params=SCOPE) as response:
        from .conftest import FrameReader

        reader = FrameReader(response)
        await reader.until("training.started")
        cancel = await http.post(f"/v1/jobs/{job['id']}/cancel", params=SCOPE)
        assert cancel.status_code == 200
        assert cancel.json() == {"ok": True}
        rest = await reader.until("end")
        assert [f["event"] for f in rest[-2:]] == ["training.cancelled", "end"]
        assert await reader.next() is None
    assert fake.outcomes[job["id"]] == "cancelled"
    got = (await http.get(f"/v1/jobs/{job['id']}", params=SCOPE)).json()["job"]
    assert got["status"] == "cancelled"
    assert got["completedAt"] is not None
    again = await http.post(f"/v1/jobs/{job['id']}/cancel", params=SCOPE)
    assert again.status_code == 409
    assert again.json() == {"error": f"job {job['id']} is already cancelled"}


async def test_cancel_queued_job_is_immediate_and_it_never_runs(http, fake) -> None:
    first = await create_job(http, "first", gate="hold")
    second = await create_job(http, "second")
    response = await http.post(f"/v1/jobs/{second['id']}/cancel", params=SCOPE)
    assert response.status_code == 200
    frames = await read_stream(http, second["id"])
    assert [f["event"] for f in frames] == ["training.cancelled", "end"]
    fake.gates["hold"].set()
    await read_stream(http, first["id"])
    assert fake.started == [first["id"]]
    listed = {
        j["id"]: j["status"] for j in (await http.get("/v1/jobs", params=SCOPE)).json()["jobs"]
    }
    assert listed == {first["id"]: "completed", second["id"]: "cancelled"}


async def test_cancel_unknown_job_is_404(http) -> None:
    response = await http.post("/v1/jobs/job_x/cancel", params=SCOPE)
    assert response.status_code == 404
    assert response.json() == {"error": "job job_x not found"}


async def test_training_failure_becomes_failed_event_with_step(http) -> None:
    job = await create_job(http, logs=2, fail="loss exploded")
    frames = await read_stream(http, job["id"])
    assert frames[-2]["event"] == "training.failed"
    assert data_of(frames[-2])["error"] == "loss exploded"
    assert data_of(frames[-2])["step"] == 2
    got = (await http.get(f"/v1/jobs/{job['id']}", params=SCOPE)).json()["job"]
    assert (got["status"], got["error"]) == ("failed", "loss exploded")


async def test_engine_crash_is_internal_error_and_server_keeps_running(http) -> None:
    job = await create_job(http, crash="boom")
    frames = await read_stream(http, job["id"])
    assert data_of(frames[-2]) | {"timestamp": None} == {
        "type": "training.failed",
        "error": "internal error: boom",
        "jobId": job["id"],
        "timestamp": None,
    }
    after = await create_job(http, logs=1)
    assert [f["event"] for f in await read_stream(http, after["id"])][-2:] == [
        "training.completed",
        "end",
    ]


async def test_engine_returning_without_terminal_event_fails_the_job(http) -> None:
    job = await create_job(http, outcome="completed")
    frames = await read_stream(http, job["id"])
    assert frames[-2]["event"] == "training.failed"
    assert "without a terminal event" in data_of(frames[-2])["error"]


async def test_unexpected_route_error_is_json_500(http, fake) -> None:
    fake.validate_error = RuntimeError("validator bug")
    response = await http.post(
        "/v1/jobs", params=SCOPE, json={"name": "x", "config": {"model": FAKE_MODEL}}
    )
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert "validator bug" not in response.text
    fake.validate_error = None
    assert (await http.get("/v1/jobs", params=SCOPE)).status_code == 200


async def test_oversized_body_is_413_json(http) -> None:
    big = {"name": "x", "config": {"model": FAKE_MODEL, "blob": "a" * (5 * 1024 * 1024)}}
    response = await http.post("/v1/jobs", params=SCOPE, json=big)
    assert response.status_code == 413
    assert isinstance(response.json()["error"], str)


async def test_oversized_chunked_body_is_413_json(http) -> None:
    async def body():
        for _ in range(5):
            yield b"a" * (1024 * 1024)

    response = await http.post("/v1/jobs", params=SCOPE, content=body())
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
