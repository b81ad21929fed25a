// Package mesostest is a Mesos 1.12 master with agents, in process, for tests.
//
// It answers the v1 scheduler API (/api/v1/scheduler) and part of the
// operator API (/api/v1) the way the real master does in the HTTP
// transcripts under shared/mesos-transcripts: status codes and error texts
// verbatim (text/plain), SUBSCRIBE as a RecordIO stream with the master's
// header order (Date, Transfer-Encoding, Mesos-Stream-Id, Content-Type) and
// one record per HTTP chunk, JSON written as the master writes it (enum
// names, base64 uuids, "2.0" for integral doubles, QUOTA_V2 in
// master_info.capabilities) or protobuf (the mesos-go v0.0.11 types), 202
// with Content-Length 0 for accepted calls, and the event order the
// transcripts show.
//
// What it emulates:
//   - Frameworks: SUBSCRIBE (MULTI_ROLE or a single role; PARTITION_AWARE;
//     TASK_KILLING_STATE; checkpoint), failover within failover_timeout
//     (a second SUBSCRIBE ends the old stream with "Framework failed over"),
//     TEARDOWN and failover-timeout removal ("Framework has been removed"
//     afterwards), never-seen framework IDs accepted, HTTP basic
//     authentication of frameworks (Config.Credentials).
//   - Calls: ACCEPT with LAUNCH (allocation_info injected when missing;
//     TASK_ERROR, TASK_DROPPED/TASK_LOST as the master words them), DECLINE
//     and ACCEPT filters (refuse_seconds, default 5 s, a filter hides an
//     agent's resources while they are a subset of the filtered ones),
//     REVIVE and SUPPRESS per role or for all roles, KILL, ACKNOWLEDGE,
//     implicit and explicit RECONCILE, TEARDOWN, UPDATE_FRAMEWORK and
//     SUBSCRIBE's suppressed_roles. SHUTDOWN, MESSAGE and REQUEST are
//     accepted and dropped. JSON null counts as an absent field (mesos-go's
//     JSON codec writes nulls).
//   - Status updates: each task has the agent's update stream: the next
//     update goes out only after the previous one is acknowledged, and an
//     un-acked one is re-sent (Config.StatusUpdateRetry, a constant
//     interval where the real agent backs off from 10 s) with its uuid.
//     Master-generated updates carry no uuid.
//   - Allocation every Config.AllocationInterval and at once after SUBSCRIBE
//     and REVIVE: quota guarantees first, offers trimmed to quota limits,
//     headroom held back for unsatisfied guarantees, min allocatable
//     cpus 0.01 or mem 32 (see alloc.go, a pure function).
//   - Operator API: GET_HEALTH, GET_VERSION, GET_QUOTA, UPDATE_QUOTA (with
//     force and the master's validation texts), TEARDOWN, and GET_ROLES,
//     GET_FRAMEWORKS, GET_AGENTS, GET_TASKS with their main fields.
//   - Agents with cpus, mem, disk, ports and TEXT attributes. A launched
//     CommandInfo runs as a real local process in its own process group
//     (with Pdeathsig) in a sandbox under the work dir laid out as Mesos
//     lays it out (slaves/<agent>/frameworks/<fw>/executors/<task>/runs/<container>,
//     runs/latest), URIs fetched from file:// and http(s):// (executable,
//     extract of .tar, .tar.gz, .tgz, .zip, archive kept), the command
//     executor's environment (MESOS_SANDBOX, MESOS_FRAMEWORK_ID, ...; like
//     Mesos, no PORT0/PORTS/HOST), TASK_STARTING, RUNNING, FINISHED, FAILED,
//     KILLING, KILLED with the executor's messages.
//   - Agent failures: KillAgent (processes die; RESCIND at once; frameworks
//     without checkpointing lose their tasks at once; after
//     Config.AgentPingTimeout TASK_UNREACHABLE or TASK_LOST and FAILURE),
//     PartitionAgent (processes run on; unreachable after the ping timeout),
//     CrashAgent (the agent process dies, checkpointed tasks run on),
//     RestoreAgent (re-registration: TASK_RUNNING or TASK_FAILED with
//     REASON_AGENT_REREGISTERED, then the agent's "Executor terminated",
//     sent once where the real agent sent it three times),
//     RestartAgent (a quick restart that checkpointed tasks survive).
//     Teardown and CloseStream end a framework's subscription from the
//     master's side; Tasks and Frameworks show the state.
//   - Redirects: /master/redirect and /redirect; a non-leading master
//     (Config.Leader) answers 307 to the leader, Config.NoLeader 503.
//
// What it does not emulate: executors other than the command executor
// (LAUNCH_GROUP gets TASK_ERROR), containers, images and isolation,
// reservations, persistent volumes and other offer operations, revocable
// resources, inverse offers and maintenance, health checks, the registry
// and its garbage collection (unreachable tasks stay unreachable), the
// operator API beyond the calls above, the v0 endpoints, weights and
// hierarchical roles, master failover and ZooKeeper.
package mesostest
