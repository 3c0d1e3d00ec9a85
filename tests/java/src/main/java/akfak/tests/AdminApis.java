package akfak.tests;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionReplica;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

/**
 * The Admin calls behind the cluster tools, on one topic of a one-node cluster:
 * {@code AdminApis BOOTSTRAP topic=NAME} (the topic exists, with partitions 0 and 1). Each call
 * prints {"kind":"call","name":...,"result":...} or, when it fails,
 * {"kind":"call","name":...,"error":EXCEPTION CLASS}, so that its answers from akfak and from
 * Kafka can be compared; values that differ between brokers (ids, sizes, times, paths) are
 * reduced to what must hold of them.
 */
public final class AdminApis {
    private static final long TIMEOUT_S = 30;
    private static AdminClient admin;

    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv, "AdminApis BOOTSTRAP topic=NAME");
        String topic = Util.required(options, "topic");
        TopicPartition tp0 = new TopicPartition(topic, 0);
        try (AdminClient client = AdminClient.create(Util.clientProps(options))) {
            admin = client;
            call("describeTopicsById", () -> {
                Uuid id = admin.describeTopics(List.of(topic)).allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS)
                    .get(topic).topicId();
                TopicDescription byId = admin.describeTopics(TopicCollection.ofTopicIds(List.of(id)))
                    .allTopicIds().get(TIMEOUT_S, TimeUnit.SECONDS).get(id);
                return Map.of("name", byId.name(), "partitions", byId.partitions().size(),
                              "same_id", byId.topicId().equals(id));
            });
            call("describeTopicsByUnknownId", () -> admin.describeTopics(TopicCollection.ofTopicIds(
                List.of(Uuid.randomUuid()))).allTopicIds().get(TIMEOUT_S, TimeUnit.SECONDS).size());
            call("describeLogDirs", () -> {
                Map<String, LogDirDescription> dirs = admin.describeLogDirs(List.of(1)).allDescriptions()
                    .get(TIMEOUT_S, TimeUnit.SECONDS).get(1);
                List<Object> out = new ArrayList<>();
                for (LogDirDescription dir : dirs.values()) {
                    Map<String, Object> partitions = new TreeMap<>();
                    dir.replicaInfos().forEach((tp, info) -> {
                        if (tp.topic().equals(topic)) {
                            partitions.put(Integer.toString(tp.partition()), Map.of(
                                "offset_lag", info.offsetLag(), "future", info.isFuture(), "empty", info.size() == 0));
                        }
                    });
                    out.add(Map.of("error", String.valueOf(dir.error()), "partitions", partitions,
                                   "total_bytes_known", dir.totalBytes().isPresent(),
                                   "usable_at_most_total",
                                   dir.usableBytes().orElse(-1) <= dir.totalBytes().orElse(-1)));
                }
                return out;
            });
            call("describeReplicaLogDirs", () -> {
                var info = admin.describeReplicaLogDirs(List.of(new TopicPartitionReplica(topic, 0, 1), new TopicPartitionReplica("no-such-topic", 0, 1)))
                    .all().get(TIMEOUT_S, TimeUnit.SECONDS);
                Map<String, Object> out = new TreeMap<>();
                info.forEach((replica, dir) -> out.put(replica.topic() + "-" + replica.partition(), Map.of(
                    "has_dir", dir.getCurrentReplicaLogDir() != null, "lag", dir.getCurrentReplicaOffsetLag())));
                return out;
            });
            call("describeMetadataQuorum", () -> {
                QuorumInfo quorum = admin.describeMetadataQuorum().quorumInfo().get(TIMEOUT_S, TimeUnit.SECONDS);
                QuorumInfo.ReplicaState voter = quorum.voters().get(0);
                return Map.of("leader", quorum.leaderId(), "voters", quorum.voters().size(),
                              "voter", voter.replicaId(), "observers", quorum.observers().size(),
                              "hw_is_leo", quorum.highWatermark() == voter.logEndOffset(),
                              "nodes", quorum.nodes().keySet(),
                              "caught_up", voter.lastCaughtUpTimestamp().isPresent());
            });
            call("electPreferred", () -> electionErrors(admin.electLeaders(ElectionType.PREFERRED,
                Set.of(tp0, new TopicPartition(topic, 7), new TopicPartition("no-such-topic", 0)))
                .partitions().get(TIMEOUT_S, TimeUnit.SECONDS)));
            call("electUncleanAll", () -> electionErrors(admin.electLeaders(ElectionType.UNCLEAN, null)
                .partitions().get(TIMEOUT_S, TimeUnit.SECONDS)));
            call("listPartitionReassignments", () -> admin.listPartitionReassignments()
                .reassignments().get(TIMEOUT_S, TimeUnit.SECONDS).size());
            call("reassignToThisNode", () -> admin.alterPartitionReassignments(Map.of(
                tp0, Optional.of(new NewPartitionReassignment(List.of(1))))).all().get(TIMEOUT_S, TimeUnit.SECONDS));
            call("reassignToMissingBroker", () -> admin.alterPartitionReassignments(Map.of(
                tp0, Optional.of(new NewPartitionReassignment(List.of(2))))).all().get(TIMEOUT_S, TimeUnit.SECONDS));
            call("cancelReassignment", () -> admin.alterPartitionReassignments(Map.of(
                tp0, Optional.empty())).all().get(TIMEOUT_S, TimeUnit.SECONDS));
            AclBinding binding = new AclBinding(new ResourcePattern(ResourceType.TOPIC, topic, PatternType.LITERAL),
                new AccessControlEntry("User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW));
            call("describeAcls", () -> admin.describeAcls(AclBindingFilter.ANY).values().get(TIMEOUT_S, TimeUnit.SECONDS));
            call("createAcls", () -> admin.createAcls(List.of(binding)).all().get(TIMEOUT_S, TimeUnit.SECONDS));
            call("deleteAcls", () -> admin.deleteAcls(List.of(AclBindingFilter.ANY)).all().get(TIMEOUT_S, TimeUnit.SECONDS));
            call("listConfigResources", () -> {
                Map<String, List<String>> out = new TreeMap<>();
                for (ConfigResource resource : admin.listConfigResources().all().get(TIMEOUT_S, TimeUnit.SECONDS)) {
                    if (resource.type() != ConfigResource.Type.TOPIC || resource.name().equals(topic)) {
                        out.computeIfAbsent(resource.type().name(), k -> new ArrayList<>()).add(resource.name());
                    }
                }
                return out;
            });
            call("listClientMetricsResources", () -> admin.listConfigResources(
                Set.of(ConfigResource.Type.CLIENT_METRICS), new org.apache.kafka.clients.admin.ListConfigResourcesOptions())
                .all().get(TIMEOUT_S, TimeUnit.SECONDS).size());
            call("clientInstanceId", () -> String.valueOf(admin.clientInstanceId(Duration.ofSeconds(5))));
        } catch (Exception e) {
            Util.fail(e);
        }
        Util.emit("kind", "done");
    }

    private static Map<String, String> electionErrors(Map<TopicPartition, Optional<Throwable>> results) {
        Map<String, String> out = new TreeMap<>();
        results.forEach((tp, error) -> out.put(tp.toString(), error.map(e -> e.getClass().getSimpleName()).orElse("none")));
        return out;
    }

    private static void call(String name, Callable<Object> action) {
        try {
            Object result = action.call();
            Util.emit("kind", "call", "name", name, "result", result == null ? "null" : result);
        } catch (ExecutionException e) {
            Util.emit("kind", "call", "name", name, "error", e.getCause().getClass().getName(),
                      "message", String.valueOf(e.getCause().getMessage()));
        } catch (Exception e) {
            Util.emit("kind", "call", "name", name, "error", e.getClass().getName(),
                      "message", String.valueOf(e.getMessage()));
        }
    }
}
