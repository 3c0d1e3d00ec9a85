package akfak.tests;

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.AbortTransactionSpec;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.FeatureUpdate;
import org.apache.kafka.clients.admin.ListShareGroupOffsetsSpec;
import org.apache.kafka.clients.admin.ListStreamsGroupOffsetsSpec;
import org.apache.kafka.clients.admin.MemberToRemove;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.RaftVoterEndpoint;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.RemoveMembersFromConsumerGroupOptions;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.admin.UpdateFeaturesOptions;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.KafkaFuture;
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
import org.apache.kafka.common.errors.ResourceNotFoundException;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Every method of the Java Admin client, once, on a one-node cluster:
 * {@code AdminMethods BOOTSTRAP prefix=P} (P names the program's topics, groups and ids, so that
 * runs on a shared broker do not meet). It first makes what the calls need: topics P and P-del,
 * 10 records, a consumer group P-group with committed offsets, a static member of P-static, and
 * an open transaction of P-txn. Then it prints, per call in a fixed order,
 * {"kind":"call","name":NAME,"outcome":"ok"|EXCEPTION SIMPLE NAME,"detail":...}: "detail" holds
 * only what does not depend on the broker's ids, sizes, times or paths, so that the lines of two
 * brokers can be compared one by one.
 */
public final class AdminMethods {
    private static final long TIMEOUT_S = 20;

    private AdminMethods() {}

    @FunctionalInterface
    interface Call {
        Object run() throws Exception;
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv, "AdminMethods BOOTSTRAP prefix=P");
        String p = Util.required(options, "prefix");
        String topic = p;
        String group = p + "-group";
        TopicPartition tp0 = new TopicPartition(topic, 0);
        TopicPartition tp1 = new TopicPartition(topic, 1);
        try (Admin admin = Admin.create(Util.clientProps(options))) {
            // -- what the calls work on
            call("createTopics", () -> get(admin.createTopics(List.of(
                new NewTopic(topic, Optional.of(2), Optional.of((short) 1)),
                new NewTopic(p + "-del", Optional.of(1), Optional.of((short) 1)))).all()));
            call("createTopicsExisting", () -> get(admin.createTopics(List.of(
                new NewTopic(topic, Optional.of(2), Optional.of((short) 1)))).all()));
            produce(options, topic);
            consumeAndCommit(options, topic, group, null);
            consumeAndCommit(options, topic, p + "-static", p + "-instance");
            KafkaProducer<String, String> txn = openTransaction(options, topic, p + "-txn");

            // -- topics
            call("listTopics", () -> get(admin.listTopics().names()).stream().filter(n -> n.startsWith(p))
                 .sorted().toList());
            call("describeTopics", () -> describe(get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic)));
            call("describeTopicsUnknown", () -> get(admin.describeTopics(List.of(p + "-none")).allTopicNames()));
            call("describeTopicsById", () -> {
                Uuid id = get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic).topicId();
                return describe(get(admin.describeTopics(TopicCollection.ofTopicIds(List.of(id))).allTopicIds()).get(id));
            });
            call("describeTopicsByUnknownId", () -> get(admin.describeTopics(
                TopicCollection.ofTopicIds(List.of(Uuid.randomUuid()))).allTopicIds()));
            call("createPartitions", () -> get(admin.createPartitions(Map.of(p + "-del", NewPartitions.increaseTo(2))).all()));
            call("createPartitionsFewer", () -> get(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(1))).all()));
            call("deleteRecords", () -> get(admin.deleteRecords(Map.of(tp0, RecordsToDelete.beforeOffset(2)))
                .lowWatermarks().get(tp0)).lowWatermark());
            call("deleteRecordsPastEnd", () -> get(admin.deleteRecords(
                Map.of(tp0, RecordsToDelete.beforeOffset(1000))).all()));
            Map<String, OffsetSpec> specs = new TreeMap<>(Map.of("earliest", OffsetSpec.earliest(), "latest",
                OffsetSpec.latest(), "maxTimestamp", OffsetSpec.maxTimestamp(), "earliestLocal",
                OffsetSpec.earliestLocal(), "latestTiered", OffsetSpec.latestTiered(), "forTimestamp0",
                OffsetSpec.forTimestamp(0)));
            specs.forEach((name, spec) -> call("listOffsets." + name, () ->
                get(admin.listOffsets(Map.of(tp0, spec)).all()).get(tp0).offset()));

            // -- configs
            Map<String, ConfigResource> resources = new TreeMap<>(Map.of(
                "topic", new ConfigResource(ConfigResource.Type.TOPIC, topic),
                "broker", new ConfigResource(ConfigResource.Type.BROKER, "1"),
                "brokerDefault", new ConfigResource(ConfigResource.Type.BROKER, ""),
                "brokerLogger", new ConfigResource(ConfigResource.Type.BROKER_LOGGER, "1"),
                "group", new ConfigResource(ConfigResource.Type.GROUP, group),
                "clientMetrics", new ConfigResource(ConfigResource.Type.CLIENT_METRICS, p + "-metrics")));
            Map<String, List<AlterConfigOp>> alterations = Map.of(
                "topic", List.of(set("retention.ms", "3600000")),
                "broker", List.of(set("log.cleaner.threads", "1")),
                "brokerDefault", List.of(set("log.flush.interval.messages", "9223372036854775807")),
                "brokerLogger", List.of(set("kafka.server", "INFO")),
                "group", List.of(set("consumer.session.timeout.ms", "50000")),
                "clientMetrics", List.of(set("metrics", "org.apache.kafka.producer."), set("interval.ms", "60000")));
            resources.forEach((name, resource) -> call("incrementalAlterConfigs." + name, () ->
                get(admin.incrementalAlterConfigs(Map.of(resource, alterations.get(name))).all())));
            resources.forEach((name, resource) -> call("describeConfigs." + name, () -> {
                var config = get(admin.describeConfigs(List.of(resource)).all()).get(resource);
                ConfigEntry altered = config.get(alterations.get(name).get(0).configEntry().name());
                return altered == null ? "absent" : altered.value() + " " + altered.source();
            }));
            call("incrementalAlterConfigsUnknownTopic", () -> get(admin.incrementalAlterConfigs(Map.of(
                new ConfigResource(ConfigResource.Type.TOPIC, p + "-none"), List.of(set("retention.ms", "1")))).all()));
            call("incrementalAlterConfigsBadValue", () -> get(admin.incrementalAlterConfigs(Map.of(
                resources.get("topic"), List.of(set("retention.ms", "soon")))).all()));
            call("listConfigResources", () -> {
                Set<String> types = new TreeSet<>();
                get(admin.listConfigResources().all()).forEach(r -> types.add(r.type().name()));
                return types;
            });
            call("listClientMetricsResources", () -> get(admin.listClientMetricsResources().all()).stream()
                 .map(r -> r.name()).filter(n -> n.startsWith(p)).toList());

            // -- cluster
            call("describeCluster", () -> {
                var cluster = admin.describeCluster();
                return Map.of("nodes", get(cluster.nodes()).size(), "controller", get(cluster.controller()).id(),
                              "cluster_id", get(cluster.clusterId()) != null);
            });
            call("describeFeatures", () -> {
                var features = get(admin.describeFeatures().featureMetadata());
                return Map.of("finalized", new TreeSet<>(features.finalizedFeatures().keySet()),
                              "supported", new TreeSet<>(features.supportedFeatures().keySet()));
            });
            call("updateFeaturesValidateOnly", () -> get(admin.updateFeatures(
                Map.of("group.version", new FeatureUpdate((short) 1, FeatureUpdate.UpgradeType.UPGRADE)),
                new UpdateFeaturesOptions().validateOnly(true)).all()));
            call("updateFeaturesUnknown", () -> get(admin.updateFeatures(
                Map.of("no.such.feature", new FeatureUpdate((short) 1, FeatureUpdate.UpgradeType.UPGRADE)),
                new UpdateFeaturesOptions()).all()));
            call("describeLogDirs", () -> get(admin.describeLogDirs(List.of(1)).allDescriptions()).get(1).size());
            call("describeReplicaLogDirs", () -> get(admin.describeReplicaLogDirs(List.of(
                new TopicPartitionReplica(topic, 0, 1))).all()).size());
            call("alterReplicaLogDirsSameDir", () -> {
                String dir = get(admin.describeLogDirs(List.of(1)).allDescriptions()).get(1).keySet().iterator().next();
                return get(admin.alterReplicaLogDirs(Map.of(new TopicPartitionReplica(topic, 0, 1), dir)).all());
            });
            call("alterReplicaLogDirsUnknownDir", () -> get(admin.alterReplicaLogDirs(Map.of(
                new TopicPartitionReplica(topic, 0, 1), "/no/such/dir")).all()));
            call("electLeaders", () -> get(admin.electLeaders(ElectionType.PREFERRED, Set.of(tp0)).partitions())
                 .get(tp0).map(e -> e.getClass().getSimpleName()).orElse("none"));
            call("alterPartitionReassignments", () -> get(admin.alterPartitionReassignments(Map.of(
                tp0, Optional.of(new NewPartitionReassignment(List.of(1))))).all()));
            call("listPartitionReassignments", () -> get(admin.listPartitionReassignments().reassignments()).size());
            call("describeMetadataQuorum", () -> get(admin.describeMetadataQuorum().quorumInfo()).voters().size());
            call("addRaftVoter", () -> get(admin.addRaftVoter(2, Uuid.randomUuid(),
                Set.of(new RaftVoterEndpoint("CONTROLLER", "127.0.0.1", 1))).all()));
            call("removeRaftVoter", () -> get(admin.removeRaftVoter(2, Uuid.randomUuid()).all()));
            call("unregisterBroker", () -> get(admin.unregisterBroker(2).all()));

            // -- groups
            call("listConsumerGroups", () -> names(get(admin.listConsumerGroups().all()).stream()
                 .map(g -> g.groupId() + " " + g.groupState().map(Object::toString).orElse("?")).toList(), p));
            call("listGroups", () -> names(get(admin.listGroups().all()).stream()
                 .map(g -> g.groupId() + " " + g.type().map(Object::toString).orElse("?")).toList(), p));
            call("describeConsumerGroups", () -> {
                var g = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
                return g.groupState() + " " + g.type() + " " + g.members().size();
            });
            call("describeConsumerGroupsUnknown", () -> {
                var g = get(admin.describeConsumerGroups(List.of(p + "-none")).all()).get(p + "-none");
                return g.groupState() + " " + g.members().size();
            });
            call("describeClassicGroups", () -> {
                var g = get(admin.describeClassicGroups(List.of(group)).all()).get(group);
                return g.state() + " " + g.protocol();
            });
            call("listConsumerGroupOffsets", () -> offsets(get(admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata())));
            call("alterConsumerGroupOffsets", () -> get(admin.alterConsumerGroupOffsets(group,
                Map.of(tp0, new OffsetAndMetadata(3))).all()));
            call("deleteConsumerGroupOffsets", () -> get(admin.deleteConsumerGroupOffsets(group, Set.of(tp1)).all()));
            call("listConsumerGroupOffsetsAfter", () -> offsets(get(admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata())));
            call("removeMembersFromConsumerGroup", () -> get(admin.removeMembersFromConsumerGroup(p + "-static",
                new RemoveMembersFromConsumerGroupOptions(List.of(new MemberToRemove(p + "-instance")))).all()));
            call("removeMembersUnknownMember", () -> get(admin.removeMembersFromConsumerGroup(p + "-static",
                new RemoveMembersFromConsumerGroupOptions(List.of(new MemberToRemove(p + "-nobody")))).all()));
            call("deleteConsumerGroups", () -> get(admin.deleteConsumerGroups(List.of(group)).all()));
            call("deleteConsumerGroupsUnknown", () -> get(admin.deleteConsumerGroups(List.of(p + "-none")).all()));
            // share groups (KIP-932) and streams groups (KIP-1071), on groups that do not exist
            call("describeShareGroups", () -> get(admin.describeShareGroups(List.of(p + "-share")).all())
                 .get(p + "-share").groupState().toString());
            call("listShareGroupOffsets", () -> get(admin.listShareGroupOffsets(Map.of(p + "-share",
                new ListShareGroupOffsetsSpec())).all()).get(p + "-share").size());
            call("alterShareGroupOffsets", () -> get(admin.alterShareGroupOffsets(p + "-share", Map.of(tp0, 0L)).all()));
            call("deleteShareGroupOffsets", () -> get(admin.deleteShareGroupOffsets(p + "-share", Set.of(topic)).all()));
            call("deleteShareGroups", () -> get(admin.deleteShareGroups(List.of(p + "-share")).all()));
            call("describeStreamsGroups", () -> get(admin.describeStreamsGroups(List.of(p + "-streams")).all())
                 .get(p + "-streams").groupState().toString());
            call("listStreamsGroupOffsets", () -> get(admin.listStreamsGroupOffsets(Map.of(p + "-streams",
                new ListStreamsGroupOffsetsSpec())).all()).get(p + "-streams").size());
            call("alterStreamsGroupOffsets", () -> get(admin.alterStreamsGroupOffsets(p + "-streams",
                Map.of(tp0, new OffsetAndMetadata(0))).all()));
            call("deleteStreamsGroupOffsets", () -> get(admin.deleteStreamsGroupOffsets(p + "-streams", Set.of(tp0)).all()));
            call("deleteStreamsGroups", () -> get(admin.deleteStreamsGroups(List.of(p + "-streams")).all()));

            // -- transactions
            call("describeProducers", () -> get(admin.describeProducers(List.of(tp1)).all()).get(tp1)
                 .activeProducers().stream().map(s -> s.currentTransactionStartOffset().isPresent()).toList());
            call("describeTransactions", () -> {
                var d = get(admin.describeTransactions(List.of(p + "-txn")).all()).get(p + "-txn");
                return d.state() + " " + d.topicPartitions().size();
            });
            call("describeTransactionsUnknown", () -> get(admin.describeTransactions(List.of(p + "-none")).all()));
            call("listTransactions", () -> get(admin.listTransactions().all()).stream()
                 .map(TransactionListing::transactionalId).filter(id -> id.startsWith(p)).toList());
            call("abortTransaction", () -> {
                ProducerState state = get(admin.describeProducers(List.of(tp1)).all()).get(tp1).activeProducers().get(0);
                return get(admin.abortTransaction(new AbortTransactionSpec(tp1, state.producerId(),
                    (short) state.producerEpoch(), state.coordinatorEpoch().orElse(0))).all());
            });
            call("fenceProducers", () -> get(admin.fenceProducers(List.of(p + "-txn")).all()));
            call("describeTransactionsAfter", () -> get(admin.describeTransactions(List.of(p + "-txn")).all())
                 .get(p + "-txn").state().toString());
            call("forceTerminateTransaction", () -> get(admin.forceTerminateTransaction(p + "-txn").result()));
            txn.close(Duration.ZERO);

            // -- security
            AclBinding binding = new AclBinding(new ResourcePattern(ResourceType.TOPIC, topic, PatternType.LITERAL),
                new AccessControlEntry("User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW));
            call("describeAcls", () -> get(admin.describeAcls(AclBindingFilter.ANY).values()));
            call("createAcls", () -> get(admin.createAcls(List.of(binding)).all()));
            call("deleteAcls", () -> get(admin.deleteAcls(List.of(AclBindingFilter.ANY)).all()));
            ClientQuotaEntity user = new ClientQuotaEntity(Map.of(ClientQuotaEntity.USER, p + "-user"));
            call("alterClientQuotas", () -> get(admin.alterClientQuotas(List.of(new ClientQuotaAlteration(user,
                List.of(new ClientQuotaAlteration.Op("producer_byte_rate", 1024.0))))).all()));
            // Kafka's brokers learn an alteration from the metadata log a moment after it answers
            call("describeClientQuotas", () -> until(() -> get(admin.describeClientQuotas(ClientQuotaFilter.all())
                .entities()).get(user)));
            call("alterUserScramCredentials", () -> get(admin.alterUserScramCredentials(List.of(
                new UserScramCredentialUpsertion(p + "-user", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                                                 "secret"))).all()));
            // (the same lag: Kafka may answer the user with no credentials yet)
            call("describeUserScramCredentials", () -> until(() -> {
                try {
                    var infos = get(admin.describeUserScramCredentials(List.of(p + "-user")).all())
                        .get(p + "-user").credentialInfos();
                    return infos.isEmpty() ? null : infos.toString();
                } catch (ExecutionException e) {
                    if (e.getCause() instanceof ResourceNotFoundException) return null;
                    throw e;
                }
            }));
            call("createDelegationToken", () -> get(admin.createDelegationToken().delegationToken()) != null);
            call("renewDelegationToken", () -> get(admin.renewDelegationToken(new byte[] {1, 2, 3}).expiryTimestamp()));
            call("expireDelegationToken", () -> get(admin.expireDelegationToken(new byte[] {1, 2, 3}).expiryTimestamp()));
            call("describeDelegationToken", () -> get(admin.describeDelegationToken().delegationTokens()).size());
            call("clientInstanceId", () -> String.valueOf(admin.clientInstanceId(Duration.ofSeconds(5))));

            // -- deleting
            call("deleteTopics", () -> get(admin.deleteTopics(List.of(p + "-del")).all()));
            call("deleteTopicsUnknown", () -> get(admin.deleteTopics(List.of(p + "-none")).all()));
            call("deleteTopicsById", () -> {
                Uuid id = get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic).topicId();
                return get(admin.deleteTopics(TopicCollection.ofTopicIds(List.of(id))).all());
            });
        } catch (Exception e) {
            Util.fail(e);
        }
        Util.emit("kind", "done");
    }

    private static <T> T get(KafkaFuture<T> future) throws Exception {
        return future.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    /** The first non-null answer of `action`, asked every 100 ms for up to 5 s (else null). */
    private static Object until(Call action) throws Exception {
        long deadline = System.currentTimeMillis() + 5000;
        Object answer = action.run();
        while (answer == null && System.currentTimeMillis() < deadline) {
            Thread.sleep(100);
            answer = action.run();
        }
        return answer;
    }

    private static AlterConfigOp set(String name, String value) {
        return new AlterConfigOp(new ConfigEntry(name, value), AlterConfigOp.OpType.SET);
    }

    private static Object describe(TopicDescription d) {
        return d.name() + " " + d.partitions().size() + " internal=" + d.isInternal();
    }

    private static List<String> names(Collection<String> names, String prefix) {
        return names.stream().filter(n -> n.startsWith(prefix)).sorted().toList();
    }

    private static Map<String, Long> offsets(Map<TopicPartition, OffsetAndMetadata> offsets) {
        Map<String, Long> out = new TreeMap<>();
        offsets.forEach((tp, o) -> out.put(tp.toString(), o == null ? -1 : o.offset()));
        return out;
    }

    private static void call(String name, Call action) {
        Object detail;
        String outcome;
        try {
            detail = action.run();
            outcome = "ok";
        } catch (ExecutionException e) {
            outcome = e.getCause().getClass().getSimpleName();
            detail = String.valueOf(e.getCause().getMessage());
        } catch (Exception e) {
            outcome = e.getClass().getSimpleName();
            detail = String.valueOf(e.getMessage());
        }
        Util.emit("kind", "call", "name", name, "outcome", outcome, "detail", detail == null ? "null" : detail);
    }

    private static void produce(Map<String, String> options, String topic) throws Exception {
        try (var producer = new KafkaProducer<>(Util.producerProps(options), new StringSerializer(),
                                                new StringSerializer())) {
            for (int i = 0; i < 10; i++) {
                producer.send(new ProducerRecord<>(topic, i % 2, "key-" + i, "value-" + i)).get();
            }
        }
    }

    /** Joins `group` (as a static member with an instance id), reads a record, commits, leaves. */
    private static void consumeAndCommit(Map<String, String> options, String topic, String group, String instance) {
        var props = Util.clientProps(options);
        props.put("group.id", group);
        props.put("auto.offset.reset", "earliest");
        props.put("enable.auto.commit", "false");
        if (instance != null) {
            props.put("group.instance.id", instance);
        }
        try (var consumer = new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer())) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 30000;
            while (consumer.poll(Duration.ofMillis(200)).isEmpty() && System.currentTimeMillis() < deadline) {
                // until the group has formed and a record came
            }
            consumer.commitSync(Duration.ofSeconds(TIMEOUT_S));
        }
    }

    private static KafkaProducer<String, String> openTransaction(Map<String, String> options, String topic, String id)
            throws Exception {
        var props = Util.producerProps(options);
        props.put("transactional.id", id);
        props.put("transaction.timeout.ms", "60000");
        var producer = new KafkaProducer<>(props, new StringSerializer(), new StringSerializer());
        producer.initTransactions();
        producer.beginTransaction();
        producer.send(new ProducerRecord<>(topic, 1, "txn", "open")).get();
        return producer;
    }
}
