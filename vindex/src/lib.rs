//! pg-router sharding vocabulary: keyspace ids, key ranges, vindexes, VSchema and shard map.
