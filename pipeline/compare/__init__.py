"""``rmat compare``: runs side by side, from any MLflow tracking store.

``store`` reads runs through MLflow's own client (one timeout per request, no retries),
``summary`` turns them into numbers (config differences, final and best val loss, the
value at the largest token budget every run reached, throughput, gaps and duplicates),
``tables`` lays those out for the terminal and for Markdown, ``plots`` draws the PNGs and
``report`` writes the report folder. ``command`` wires them for the CLI.
"""
