@0xba65b1171757073d;
# libdynamo's wire protocol: the one schema every node and client speaks.
#
# EVOLUTION RULE: this schema only ever grows. Fields, enumerants and methods are added
# with the next free ordinal; none is ever removed, renumbered, renamed to mean something
# else, or given another type. A reader that meets a field it does not know ignores it;
# a field a newer peer did not set reads as its default. So nodes of adjacent versions
# can talk during a rolling upgrade.
#
# Versions on the wire (`VersionBytes`) are in the core's own binary version encoding
# (src/version.rs, `Version::encode_into`), which carries its own format rules.

# Why a request failed. Every reply carries `failure`; it is unset on success.
struct Failure {
  kind @0 :Kind;
  message @1 :Text;   # complete, human-readable: names store, key, nodes, numbers

  enum Kind {
    internal @0;      # a bug or an engine failure on the node
    badRequest @1;    # empty/oversize key or value, bad R/W: fix the request
    unknownStore @2;  # the store is not hosted by this cluster
    badContext @3;    # the context token is malformed or belongs to another key
    quorum @4;        # fewer than R/W replicas answered; `message` names who did and who did not
    unavailable @5;   # the node is shutting down or cannot reach any coordinator
    tooLarge @6;      # the key's record would grow past its size limit: resolve siblings
    overloaded @7;    # too busy to start before the deadline; refused untouched: try
                      # another coordinator after a short backoff (the node is not down)
    deadline @8;      # the request's deadline passed before the work could be done;
                      # a write may or may not have been applied
  }
}

# One sibling as a client sees it.
struct Sibling {
  value @0 :Data;     # empty when deleted
  deleted @1 :Bool;   # a tombstone (kept as a sibling until reaped)
}

# Encoded versions (see the header comment).
using VersionBytes = Data;

struct GetReply {
  failure @0 :Failure;
  siblings @1 :List(Sibling);
  context @2 :Text;          # covers exactly `siblings`; pass it to the next put
  coordinator @3 :Text;      # the node that coordinated the request
  ringVersion @4 :UInt64;    # the serving ring version of the node that answered
}

struct PutReply {
  failure @0 :Failure;
  context @1 :Text;          # covers what was written and what the request's context covered
  coordinator @2 :Text;
  ringVersion @3 :UInt64;    # the serving ring version of the node that answered
}

struct MemberInfo {
  name @0 :Text;
  address @1 :Text;
  zone @2 :Text;
  up @3 :Bool;               # as seen by the answering node (failure detection is local)
  partitions @4 :UInt32;     # partitions it owns
  lastError @5 :Text;        # why it was marked down, if it is
}

struct StoreInfo {
  name @0 :Text;
  engine @1 :Text;
  n @2 :UInt8;
  r @3 :UInt8;
  w @4 :UInt8;
  policy @5 :Text;
  maxValueSize @6 :UInt64;
}

struct RingReply {
  ringJson @0 :Text;         # src/ring.rs `Ring::to_json`: the partition owners
  members @1 :List(MemberInfo);
  stores @2 :List(StoreInfo);
}

struct HintBacklog {
  owner @0 :Text;            # the node the hints are for
  count @1 :UInt64;          # keys waiting to be handed off
  notMember @2 :Bool;        # the owner is no longer a member: these cannot be delivered
}

struct StatusReply {
  node @0 :Text;
  address @1 :Text;
  nodeId @2 :Text;           # this data directory's incarnation (hex)
  uptimeMs @3 :UInt64;
  members @4 :List(MemberInfo);
  hints @5 :List(HintBacklog);
  stores @6 :List(StoreInfo);
  inFlight @7 :UInt64;       # client requests being served
  unhealthy @8 :Text;        # empty when healthy; else why (e.g. its storage failed)
  callTimeouts @9 :UInt64;   # calls to peers that timed out since start
  ringVersion @10 :UInt64;   # the version of the ring this node serves with (0: none yet)
  membershipChanges @11 :UInt32;  # changes in its membership history
  membershipDigest @12 :Text;     # hex MD5 of that history: equal digests, equal rings
  ringDigest @13 :Text;      # hex MD5 of the ring's JSON (byte-for-byte comparison)
  targetRingVersion @14 :UInt64;  # the version every applied change leads to
  transferJson @15 :Text;    # this node's ownership transfer (JSON), empty when none
  antiEntropyJson @16 :Text; # anti-entropy, rebuilds, reaping, admission control and
                             # refused hints (JSON, src/node/anti_entropy.rs), empty: none
  loadJson @17 :Text;        # limits, refusals, expired work, the engine pool and peers
                             # marked down (JSON, src/api/status.rs LoadStatus), empty: none
}

# The client-facing interface; it is also the bootstrap capability of every node.
# `r`/`w` of 0 mean the store's own quorum. `forwarded` is set by a node that passes a
# request on to a coordinator in the key's preference list (server-driven coordination);
# a forwarded request is never forwarded again. `requestId` (0: none) is chosen by the
# client once per put or delete and kept across its retries: a node that finds a version
# written by that id answers with it instead of writing again. `retry` says an earlier
# attempt of the same request may have been applied elsewhere (its reply was lost): the
# coordinator then first looks for that request's version on the key's replicas.
# `deadlineMs` (0: none, the node's default applies) is the caller's time left, in
# milliseconds, when it sent the call: a node that cannot start the request in time
# refuses it (`overloaded`), one that finds it passed drops it (`deadline`), and every
# forward and replica call it makes carries what is left (src/api/deadline.rs).
interface Dynamo {
  get @0 (store :Text, key :Data, r :UInt8, forwarded :Bool, deadlineMs :UInt32)
      -> (reply :GetReply);
  put @1 (store :Text, key :Data, value :Data, context :Text, w :UInt8, forwarded :Bool,
          requestId :UInt64, retry :Bool, deadlineMs :UInt32)
      -> (reply :PutReply);
  delete @2 (store :Text, key :Data, context :Text, w :UInt8, forwarded :Bool,
             requestId :UInt64, retry :Bool, deadlineMs :UInt32)
      -> (reply :PutReply);
  ring @3 () -> (reply :RingReply);
  status @4 () -> (reply :StatusReply);
  # The internode interface of the same node (peers and diagnostics use it).
  internode @5 () -> (node :Internode);
  # A membership action (`dynamo admin`): the request and the reply are JSON (see
  # src/admin.rs). A refused action answers a failure with the reason.
  admin @6 (request :Text) -> (failure :Failure, reply :Text);
}

# Node to node: replica reads and writes of version sets, hinted delivery, ping.
# `deadlineMs` as for `Dynamo`: a replica that finds it passed (or cannot queue the
# work before it) drops the call without touching its engine.
interface Internode {
  # This replica's versions of `key`, hinted ones it keeps for other owners included.
  # `ringVersion` is the replica's serving ring version: a caller with an older ring
  # refreshes it (a membership change switched owners). With `asOwner` the caller
  # reads this node as one of the key's owners: a node that holds nothing for the key
  # and is no owner of its partition in the rings it knows (it may have dropped the
  # partition since the caller's ring) fails the read instead of answering "none".
  # `rebuilding`: this node lost its data (a new incarnation, or a store's data missing)
  # and has not rebuilt the key's partition yet, so its answer counts as a stand-in's.
  # `reaped`: the key's reaped context here (src/context.rs encoding; empty: none):
  # versions it covers are dead, and the reader drops them from other replies.
  read @0 (store :Text, key :Data, asOwner :Bool, deadlineMs :UInt32)
      -> (failure :Failure, versions :List(VersionBytes), ringVersion :UInt64,
          rebuilding :Bool, reaped :Data);
  # Merge `versions` into this replica. With `hintFor` set the receiver is a stand-in
  # for that owner: it keeps the versions and a hint to hand them off later. `step`
  # names the coordinator's membership view (its serving ring and pending change, see
  # `Topology::step_key`; empty: not checked). The versions are stored either way; when
  # the coordinator's view is another and it matters (a transfer is pending here, or
  # this node is no owner of the key in its own rings) `viewDiffers` is set: the
  # coordinator learns this node's view and plans the write again with it (it must
  # reach the receivers of a pending change, and the owners of a switched one).
  # `reaped` (empty: none): a reaped context the receiver takes in too (read repair of a
  # replica that still holds versions reaped elsewhere).
  write @1 (store :Text, key :Data, versions :List(VersionBytes), hintFor :Text,
            step :Text, reaped :Data, deadlineMs :UInt32)
      -> (failure :Failure, viewDiffers :Bool, held :List(VersionBytes));
  # `held`: versions this replica holds (after the merge) that another attempt of the
  # same client request wrote under another dot: the coordinator's answer covers them
  # too, so a write made with it supersedes every attempt.
  # A stand-in hands off versions it kept for this node (the intended owner). The owner
  # answers only once they are durable (synced), so the stand-in may then drop its copy.
  deliverHint @2 (store :Text, key :Data, versions :List(VersionBytes), from :Text,
                  deadlineMs :UInt32)
      -> (failure :Failure);
  # Liveness: the caller's name in, this node's name and data-directory id out.
  ping @3 (from :Text) -> (name :Text, nodeId :Text);
  # Up to `limit` keys this replica holds in `partition` of `store` that sort after
  # `after` (empty: from the first), in key order; `more` when others follow. Listing a
  # store (export, consistency checks) pages through every partition with it.
  keys @4 (store :Text, partition :UInt32, after :Data, limit :UInt32)
      -> (failure :Failure, keys :List(Data), more :Bool);
  # Membership gossip (digest first). The caller sends its history's digest, plus its
  # whole history (JSON list of changes) when it knows the callee lacks changes; the
  # callee merges what it is given and answers with its own digest, plus its history
  # when the digests still differ.
  gossip @5 (from :Text, digest :Data, history :Text)
      -> (failure :Failure, digest :Data, history :Text);
  # A partition's data for a transfer: up to `limit` keys of `partition` after `after`
  # (empty: from the first), each with every version this replica holds, stopping
  # early past `maxBytes` of values; `more` when others follow. The receiver pulls one
  # page at a time (its backpressure). `from` is the receiver. `rebuilding`: this
  # replica lost its data and is rebuilding the partition itself (the page may lack
  # writes it acknowledged before). With `graveyard`, the pages list the partition's
  # reaped keys that have no record instead (no versions, their reaped contexts): a
  # transfer pulls those after the records.
  partitionRecords @6 (store :Text, partition :UInt32, after :Data, limit :UInt32,
                       maxBytes :UInt64, from :Text, graveyard :Bool)
      -> (failure :Failure, records :List(KeyVersions), more :Bool, rebuilding :Bool);
  # Anti-entropy (src/node/anti_entropy.rs). The roots of `partitions` of `store`'s
  # trees here; `ready` is false for a tree not built yet or a partition this node is
  # rebuilding (its root means nothing then).
  aaeRoots @7 (store :Text, partitions :List(UInt32))
      -> (failure :Failure, roots :List(UInt64), ready :List(Bool));
  # With `branches` empty, the 16 branch hashes of the partition's tree; else the 16
  # leaf hashes under each branch named. `ready` as for `aaeRoots`.
  aaeTree @8 (store :Text, partition :UInt32, branches :List(UInt16))
      -> (failure :Failure, ready :Bool, hashes :List(UInt64));
  # The keys of the named leaf segments with their state hashes (at most `limit` per
  # segment; `more` when a segment had more), for the first `listed` segments named, as
  # many as fit in a quarter of a message (at least one): the caller asks again for the
  # rest.
  aaeSegments @9 (store :Text, partition :UInt32, segments :List(UInt16), limit :UInt32)
      -> (failure :Failure, keys :List(Data), hashes :List(UInt64), more :Bool,
          listed :UInt16);
  # Every version this replica holds of each key, and its reaped context, for the first
  # keys in order, as many as fit in a quarter of a message (at least one): the caller
  # asks again for the rest.
  fetch @10 (store :Text, keys :List(Data))
      -> (failure :Failure, records :List(KeyVersions));
  # Merges each record (versions and reaped context) into this replica. A record this
  # replica refuses (over its limits) does not keep the others out: the failure names
  # how many were refused.
  mergeRecords @11 (store :Text, records :List(KeyVersions)) -> (failure :Failure);
  # Before a reap: for each record (a key with the tombstones the reaper holds), what
  # this node holds: 0 something else, 1 exactly those tombstones, 2 no versions and a
  # reaped context covering them, 3 a hint for the key waiting here. `moving`: this
  # node's view has a membership change pending.
  reapCheck @12 (store :Text, records :List(KeyVersions))
      -> (failure :Failure, states :List(UInt8), moving :Bool);
  # Reaps each key whose versions here are exactly the record's (see
  # `VersionedStore::reap`); `reaped` per record.
  reap @13 (store :Text, records :List(KeyVersions))
      -> (failure :Failure, reaped :List(Bool));
}

# One key and its versions (a transfer page).
struct KeyVersions {
  key @0 :Data;
  versions @1 :List(VersionBytes);
  reaped @2 :Data;           # the key's reaped context (empty: none)
}
