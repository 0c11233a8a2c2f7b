"""Schedule an SMS campaign on a Dexatel audience, then watch it run.

Run: ``python examples/schedule_campaign.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import anyio
from _emulators import providers

from audiencekit import DexatelBackend, Member
from audiencekit.options import PollPolicy


async def main() -> str:
    with providers() as settings:
        async with DexatelBackend(**settings["dexatel"]) as dexatel:
            audience = await dexatel.create_audience("spring-sale", channel="SMS")
            await dexatel.add_members(
                audience.id,
                [Member(f"+3749100{i:04d}", attributes={"first_name": f"Guest{i}"})
                 for i in range(25)],
            )  # fmt: skip
            client = dexatel.client  # campaigns and templates are on the provider's client
            template = await client.create_template(
                channel="SMS", name="spring_sale", text="Hi {first_name}, 20% off this week!"
            )
            when = datetime.now(timezone.utc) + timedelta(days=1)
            campaign = await client.create_campaign(
                sender="ShopCo", audience_id=audience.id, template_id=template.id,
                schedule=when, name="Spring sale",
            )  # fmt: skip
            print(f"scheduled {campaign.name!r} for {campaign.schedule:%Y-%m-%d %H:%M} UTC")
            campaign = await client.update_campaign(
                campaign.id, schedule=when - timedelta(hours=20)
            )
            print(f"moved it to {campaign.schedule:%Y-%m-%d %H:%M} UTC")

            now = await client.create_campaign(
                sender="ShopCo", audience_id=audience.id, template_id=template.id,
                name="Flash sale",
            )  # fmt: skip
            done = await client.wait_for_campaign(now.id, policy=PollPolicy(max_wait=120))
            print(f"{done.name!r}: {done.status.value}, {done.messages.delivered} delivered")
            await client.cancel_campaign(campaign.id)
            return done.status.value


if __name__ == "__main__":
    anyio.run(main)
