"""Share groups (KIP-932, "queues for Kafka"): membership and assignment (`group`,
`assignor`), share sessions (`sessions`), the share-partition state with its acquisition
locks (`partition`), the share coordinator keeping that state in `__share_group_state`
(`coordinator`, `records`), and their wiring into a broker (`service`)."""
