"""HTTP for people and monitoring: /metrics (Prometheus) and the web console.

Served with twisted.web in the broker's reactor on the endpoints `--http` or
`akfak.http.listeners` name.  Nothing here may block the reactor: pages that read many
segments do it in bounded slices or on a thread.
"""
