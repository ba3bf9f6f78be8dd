"""Quiver's control plane: the cluster state (collections, shard maps, live shard servers) kept in etcd.

Modules, bottom up: `etcd_client` (the only one that touches pyetcd), `keys` (the key layout), `records` (the
stored documents), `store` (transactions over them and the ClusterSnapshot), `watcher` (a snapshot kept
current by an etcd watch). Import from the modules; this package re-exports nothing so that reading records
does not pull in gRPC.
"""
