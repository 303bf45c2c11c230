"""Figures of a data-prep stage's output, drawn from its report (no data is read again)."""

from __future__ import annotations

from pipeline.figures import panels, png


def ingest_figure(report: dict) -> bytes:
    """Documents per domain, and MB per split, of an ingest report (``ingest.json``)."""
    fig, (domains, splits) = panels(2)
    names = sorted(report["domains"])
    domains.bar(names, [report["domains"][n] for n in names])
    domains.set(title="documents per domain", ylabel="documents")
    split_names = sorted(report["splits"])
    splits.bar(split_names, [report["splits"][s]["bytes"] / 1e6 for s in split_names])
    splits.set(title="text per split", ylabel="MB")
    return png(fig)


def shards_figure(manifest: dict) -> bytes:
    """Tokens per split, and per shard in manifest order, of a shard folder's manifest."""
    fig, (splits, shards) = panels(2)
    names = sorted(manifest["splits"])
    splits.bar(names, [manifest["splits"][s]["tokens"] / 1e6 for s in names])
    splits.set(title="tokens per split", ylabel="M tokens")
    for split in names:
        index = [i for i, s in enumerate(manifest["shards"]) if s["split"] == split]
        shards.bar(index, [manifest["shards"][i]["tokens"] / 1e6 for i in index], label=split)
    shards.set(title="tokens per shard", xlabel="shard (manifest order)", ylabel="M tokens")
    shards.legend(fontsize="small")
    return png(fig)
