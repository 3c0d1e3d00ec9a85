package akfak.tests;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.ListShareGroupOffsetsSpec;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

/**
 * Topic set-up and checks through the Java AdminClient.
 * <ul>
 * <li>{@code create=NAME:PARTITIONS[,NAME:PARTITIONS...]} creates topics (replication factor 1);</li>
 * <li>{@code offsets=TOPIC [group=GROUP]} prints the topic's end offsets and, with a group, the
 *     group's committed offsets: {"kind":"offsets","end":{"0":n,...},"committed":{...}}.</li>
 * <li>share groups (KIP-932), in this order: {@code share-reset=GROUP:TOPIC:PARTITION:OFFSET}
 *     (alterShareGroupOffsets), {@code share-delete=GROUP:TOPIC} (deleteShareGroupOffsets),
 *     {@code share-delete-group=GROUP} (deleteShareGroups), {@code share-offsets=GROUP} prints listShareGroupOffsets:
 *     {"kind":"share-offsets","offsets":{"TOPIC-P":start offset (-1: none),...}}.</li>
 * </ul>
 */
public final class Admin {
    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv,
            "Admin BOOTSTRAP create=NAME:PARTITIONS,... | offsets=TOPIC [group=GROUP] | "
            + "share-reset=GROUP:TOPIC:PARTITION:OFFSET | share-delete=GROUP:TOPIC | share-delete-group=GROUP | "
            + "share-offsets=GROUP");
        try (AdminClient admin = AdminClient.create(Util.clientProps(options))) {
            if (options.containsKey("create")) {
                List<NewTopic> topics = new ArrayList<>();
                for (String spec : options.get("create").split(",")) {
                    String[] parts = spec.split(":");
                    topics.add(new NewTopic(parts[0], Optional.of(Integer.parseInt(parts[1])), Optional.of((short) 1)));
                }
                admin.createTopics(topics).all().get(30, TimeUnit.SECONDS);
                Util.emit("kind", "created", "topics", topics.stream().map(NewTopic::name).toList());
            }
            if (options.containsKey("offsets")) {
                String topic = options.get("offsets");
                TopicDescription description =
                    admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
                Map<TopicPartition, OffsetSpec> latest = description.partitions().stream()
                    .collect(Collectors.toMap(p -> new TopicPartition(topic, p.partition()), p -> OffsetSpec.latest()));
                Map<TopicPartition, Long> end = admin.listOffsets(latest).all().get(30, TimeUnit.SECONDS)
                    .entrySet().stream().collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
                Map<TopicPartition, Long> committed = Map.of();
                if (options.containsKey("group")) {
                    Map<TopicPartition, OffsetAndMetadata> offsets = admin
                        .listConsumerGroupOffsets(options.get("group")).partitionsToOffsetAndMetadata()
                        .get(30, TimeUnit.SECONDS);
                    committed = offsets.entrySet().stream().filter(e -> e.getKey().topic().equals(topic))
                        .collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
                }
                Util.emit("kind", "offsets", "end", Util.byPartition(end), "committed", Util.byPartition(committed));
            }
            if (options.containsKey("share-reset")) {
                String[] parts = options.get("share-reset").split(":");
                admin.alterShareGroupOffsets(parts[0], Map.of(new TopicPartition(parts[1], Integer.parseInt(parts[2])),
                    Long.parseLong(parts[3]))).all().get(30, TimeUnit.SECONDS);
                Util.emit("kind", "share-reset");
            }
            if (options.containsKey("share-delete")) {
                String[] parts = options.get("share-delete").split(":");
                admin.deleteShareGroupOffsets(parts[0], Set.of(parts[1])).all().get(30, TimeUnit.SECONDS);
                Util.emit("kind", "share-deleted");
            }
            if (options.containsKey("share-delete-group")) {
                admin.deleteShareGroups(List.of(options.get("share-delete-group"))).all().get(30, TimeUnit.SECONDS);
                Util.emit("kind", "share-group-deleted");
            }
            if (options.containsKey("share-offsets")) {
                String group = options.get("share-offsets");
                Map<TopicPartition, OffsetAndMetadata> offsets = admin
                    .listShareGroupOffsets(Map.of(group, new ListShareGroupOffsetsSpec()))
                    .partitionsToOffsetAndMetadata(group).get(30, TimeUnit.SECONDS);
                Map<String, Long> starts = new java.util.TreeMap<>();
                offsets.forEach((tp, offset) -> starts.put(tp.toString(), offset == null ? -1L : offset.offset()));
                Util.emit("kind", "share-offsets", "offsets", starts);
            }
        } catch (Exception e) {
            Util.fail(e);
        }
    }
}
