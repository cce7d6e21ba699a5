"""Projects: the TypeScript SDK's scope bootstrap (POST/GET /v1/projects) and jobs scoped to them.

Request shapes as the SDK sends them (shared wire spec section 5.5): ``POST /v1/projects`` with
``orgSlug`` only and ``{name, slug}``; on 409 it lists the projects and reuses the slug.
"""

from __future__ import annotations

import pytest

from arkor_trio.server import open_local_backend

from .conftest import FAKE_MODEL, SCOPE, create_job, parse_frames

ORG = {"orgSlug": "local"}
DEFAULT = {"id": "proj_default", "slug": "default", "name": "Default", "orgId": "org_local"}


async def test_create_then_list_then_409_for_the_same_slug(http) -> None:
    created = await http.post("/v1/projects", params=ORG, json={"name": "My Bot", "slug": "my-bot"})
    assert created.status_code == 201
    project = created.json()["project"]
    assert project["slug"] == "my-bot"
    assert project["name"] == "My Bot"
    assert project["orgId"] == "org_local"
    assert project["id"].startswith("proj_")
    listed = (await http.get("/v1/projects", params=ORG)).json()
    assert listed == {"org": {"id": "org_local", "slug": "local", "name": "Local"},
                      "projects": [DEFAULT, project]}  # fmt: skip
    again = await http.post("/v1/projects", params=ORG, json={"name": "x", "slug": "my-bot"})
    assert again.status_code == 409
    assert again.json() == {"error": "project slug 'my-bot' already exists"}
    taken = await http.post("/v1/projects", params=ORG, json={"name": "d", "slug": "default"})
    assert taken.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "slug"),
        ({"name": "x", "slug": ""}, "slug"),
        ({"name": "x", "slug": 7}, "slug"),
        ({"name": "x", "slug": "Upper"}, "slug"),
        ({"name": "x", "slug": "-lead"}, "slug"),
        ({"name": "x", "slug": "trail-"}, "slug"),
        ({"name": "x", "slug": "a b"}, "slug"),
        ({"name": "x", "slug": "a/../b"}, "slug"),
        ({"name": "x", "slug": "a" * 65}, "slug"),
        ({"name": "", "slug": "ok"}, "name"),
        ({"name": "n" * 201, "slug": "ok"}, "name"),
        ({"name": ["x"], "slug": "ok"}, "name"),
        ({"slug": "ok", "owner": "me"}, "owner"),
    ],
)
async def test_bad_project_requests_name_the_field(http, body, field) -> None:
    response = await http.post("/v1/projects", params=ORG, json=body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert (await http.get("/v1/projects", params=ORG)).json()["projects"] == [DEFAULT]


async def test_longest_slug_is_accepted(http) -> None:
    slug = "a" * 64
    response = await http.post("/v1/projects", params=ORG, json={"slug": slug})
    assert response.status_code == 201
    assert response.json()["project"]["name"] == slug


async def test_projects_need_the_local_org(http) -> None:
    assert (await http.get("/v1/projects")).status_code == 400
    response = await http.post("/v1/projects", params={"orgSlug": "acme"}, json={"slug": "x"})
    assert response.status_code == 404


async def test_jobs_are_scoped_to_their_project(http) -> None:
    await http.post("/v1/projects", params=ORG, json={"name": "other", "slug": "other"})
    other = {**ORG, "projectSlug": "other"}
    mine = await create_job(http, "in-default", logs=1)
    created = await http.post(
        "/v1/jobs", params=other, json={"name": "in-other", "config": {"model": FAKE_MODEL}}
    )
    assert created.status_code == 201
    theirs = created.json()["job"]
    assert theirs["projectId"] != mine["projectId"] == "proj_default"

    listed = (await http.get("/v1/jobs", params=SCOPE)).json()["jobs"]
    assert [j["id"] for j in listed] == [mine["id"]]
    listed = (await http.get("/v1/jobs", params=other)).json()["jobs"]
    assert [j["id"] for j in listed] == [theirs["id"]]

    # Another project's job is not found through this scope, on every job route.
    for method, path in [
        ("GET", f"/v1/jobs/{theirs['id']}"),
        ("POST", f"/v1/jobs/{theirs['id']}/cancel"),
        ("GET", f"/v1/jobs/{theirs['id']}/events/stream"),
    ]:
        response = await http.request(method, path, params=SCOPE)
        assert response.status_code == 404, (method, path)
        assert theirs["id"] in response.json()["error"]
    chat = await http.post(
        "/v1/inference/chat",
        params=SCOPE,
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "adapter": {"kind": "final", "jobId": theirs["id"]},
        },
    )
    assert chat.status_code == 404
    # ... and found through its own.
    url = f"/v1/jobs/{theirs['id']}/events/stream"
    async with http.stream("GET", url, params=other) as response:
        frames = parse_frames((await response.aread()).decode())
    assert [f["event"] for f in frames][-2:] == ["training.completed", "end"]
    assert (await http.get(f"/v1/jobs/{theirs['id']}", params=other)).status_code == 200


async def test_unknown_project_is_404_naming_how_to_create_it(http) -> None:
    response = await http.get("/v1/jobs", params={**ORG, "projectSlug": "nope"})
    assert response.status_code == 404
    assert "POST /v1/projects" in response.json()["error"]


async def test_projects_survive_a_restart(fake, tmp_path) -> None:
    import httpx

    from .conftest import headers_for

    data = tmp_path / "data"
    for attempt in range(2):
        async with (
            open_local_backend(data, engine=fake.engine()) as backend,
            httpx.AsyncClient(base_url=backend.base_url, headers=headers_for(backend)) as http,
        ):
            response = await http.post("/v1/projects", params=ORG, json={"slug": "kept"})
            assert response.status_code == (201 if attempt == 0 else 409)
            slugs = [
                p["slug"] for p in (await http.get("/v1/projects", params=ORG)).json()["projects"]
            ]
            assert slugs == ["default", "kept"]
