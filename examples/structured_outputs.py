"""Recipe: constrain the fine-tuned model's answer to one of a few labels.

After a short run on the support-triage demo data, ``client.chat`` runs the job's final adapter
(``Adapter(kind="final", job_id=...)``) with ``structured_outputs={"choice": [...]}``: the answer
is exactly one of the labels, ready for a ``match`` statement, no parsing. The local backend
answers ``choice`` by scoring each label under the model; the cloud (vLLM) also takes ``regex``,
``json``, ``grammar`` and ``response_format`` JSON schemas, which the local backend refuses with
a 400 naming the option.

Run it: ``python examples/structured_outputs.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from _recipe import MODEL, demo_dataset, run

from arkor_trio import Adapter, create_trainer

if TYPE_CHECKING:
    from arkor_trio import ArkorClient

LABELS = ["billing", "bug", "account", "outage", "feature-request"]
SYSTEM = "You triage support tickets. Reply with the category, then one next step."
TICKETS = (
    "I was charged twice for the Pro plan this month.",
    "Nothing loads for anyone in our company since 9am.",
    "Please add dark mode to the editor.",
    "I cannot log in after resetting my password.",
)


async def main(client: ArkorClient, *, max_steps: int = 80) -> dict[str, str]:
    """Train briefly, then label each ticket with one of ``LABELS``; return ticket -> label."""
    trainer = create_trainer(
        name="triage-labels", model=MODEL, dataset=demo_dataset(client), max_steps=max_steps,
        client=client,
    )  # fmt: skip
    result = await trainer.wait()
    if result.job.status != "completed":
        raise SystemExit(f"the run ended {result.job.status}: {result.job.error}")
    adapter = Adapter(kind="final", job_id=result.job.id)
    labels: dict[str, str] = {}
    for ticket in TICKETS:
        answer = await client.chat(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ticket}],
            adapter=adapter,
            structured_outputs={"choice": LABELS},
        )
        assert answer.text in LABELS  # guaranteed by the constraint
        labels[ticket] = answer.text
        print(f"{answer.text:>16}  {ticket}")
    return labels


if __name__ == "__main__":
    run(main)
