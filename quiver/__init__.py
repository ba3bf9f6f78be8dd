"""Quiver: a sharded vector search cluster. This package holds what the router, the shard servers and
clients share: the generated protos (quiver.v1), the wire conversions, the filter model, errors, the etcd
control plane and the client."""
