"""Usage export, exactly once: charged requests leave the outbox (`storage/outbox_repo.py`) for billing systems.

    delivery.py   the sink protocol, one HTTP attempt's outcome, and a batch's delivery (refused batches split)
    stripe.py     Stripe meter events (POST /v1/billing/meter_events, `identifier` = request id)
    lago.py       Lago events (POST /api/v1/events/batch, `transaction_id` = request id)
    openmeter.py  OpenMeter CloudEvents (POST /api/v1/events, batch content type, `id` = request id)
    webhook.py    a generic webhook, HMAC-SHA256 signed, `X-Haimaker-Event-Id` and per-event ids
    exporter.py   UsageExporter: one loop per sink, cursor moved only after the sink acknowledged, retries

Exactly once = at-least-once delivery (a row is sent until its sink acknowledged it, across restarts) + the sink's
dedupe on a key that is the same on every attempt (the request id).
"""
