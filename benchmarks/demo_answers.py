"""Which prompts the demo's toy model answers sensibly: a table by temperature and system prompt.

Usage: ``python benchmarks/demo_answers.py [--steps 300]`` (trains the bundled demo dataset on
an in-process local backend, about 10-40 s, then asks the final adapter 10 prompts, 2 seeds each).
An answer counts as sensible when its first line is one of the dataset's five categories and its
second starts with ``Next step:`` (the shape of every answer in the data). Results:
docs/local-backend.md, "What the model can answer".
"""

from __future__ import annotations

import argparse
import time

import httpx
import trio

from arkor_trio import BlobDataset
from arkor_trio._version import USER_AGENT
from arkor_trio.server import open_local_backend

SYSTEM = "You triage support tickets. Reply with the category, then one next step."
CATEGORIES = ("billing", "feature-request", "outage", "bug", "account")
PROMPTS = {
    "tickets": [
        "Why was my card charged twice for the Pro plan?",
        "The web app returns errors for everyone on our team.",
        "It would be great to have dark mode in the dashboard.",
        "I cannot reset my password, the email never arrives.",
        "When I click export on the mobile app, the page crashes.",
    ],
    "other": [
        "My invoice was charged twice this month.",
        "hello",
        "What is the capital of France?",
        "Can you write me a poem about the sea?",
        "how do I delete my account and all my data",
    ],
}
SCOPE = {"orgSlug": "local", "projectSlug": "default"}


def sensible(text: str) -> bool:
    first, _, rest = text.partition("\n")
    return first.strip() in CATEGORIES and rest.startswith("Next step:")


async def main(steps: int) -> None:
    async with open_local_backend(None) as backend:
        headers = {"Authorization": f"Bearer {backend.token}", "X-Arkor-Client": USER_AGENT}
        async with httpx.AsyncClient(base_url=backend.base_url, headers=headers, timeout=600) as c:
            config = {
                "model": "unsloth/gemma-4-E4B-it",
                "datasetSource": {"type": "blob", "url": BlobDataset.demo().url},
                "maxSteps": steps,
            }
            started = time.monotonic()
            created = await c.post("/v1/jobs", params=SCOPE, json={"name": "m", "config": config})
            job_id = created.json()["job"]["id"]
            async with c.stream("GET", f"/v1/jobs/{job_id}/events/stream", params=SCOPE) as r:
                await r.aread()  # until the run ends
            print(f"{steps} steps trained in {time.monotonic() - started:.1f} s\n")
            print("| system prompt | temperature | tickets | other prompts |")
            print("|---|---|---|---|")
            for system in (False, True):
                for temperature in (1.0, 0.5, 0.2, 0.0):
                    row = []
                    for prompts in PROMPTS.values():
                        good = 0
                        for prompt in prompts:
                            messages = [{"role": "user", "content": prompt}]
                            if system:
                                messages.insert(0, {"role": "system", "content": SYSTEM})
                            for seed in (1, 2):
                                body = {
                                    "messages": messages,
                                    "adapter": {"kind": "final", "jobId": job_id},
                                    "stream": False,
                                    "maxTokens": 120,
                                    "temperature": temperature,
                                    "seed": seed,
                                }
                                answer = await c.post("/v1/inference/chat", params=SCOPE, json=body)
                                text = answer.json()["choices"][0]["message"]["content"]
                                good += sensible(text)
                        row.append(f"{good}/{2 * len(prompts)}")
                    print(f"| {'yes' if system else 'no'} | {temperature} | {row[0]} | {row[1]} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    trio.run(main, parser.parse_args().steps)
