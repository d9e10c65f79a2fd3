"""Fair use: request rates per key and per client address, the lockout after failed
authentications, and each tenant's quotas.

Rates are counted per node, in memory that every worker process of the node shares
(`counters`); quotas are counted in the database, exactly, across nodes (`quotas`)."""
