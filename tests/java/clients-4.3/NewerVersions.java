import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.protocol.ApiKeys;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * kafka-clients 4.3 (run from source: java -cp CLASSPATH NewerVersions.java BOOTSTRAP TOPIC).
 * Prints, one JSON line each, the highest stable version of every API this client knows
 * (Kafka 4.3's schemas), then uses the versions past Kafka 4.1.1 against the broker: Admin and
 * consumer ListOffsets (v11 with earliest-pending-upload), and a consumer-protocol member's
 * OffsetCommit / OffsetFetch (v10, topics by id; a classic consumer stays at v9).
 */
public class NewerVersions {
    static void print(String kind, Object... pairs) {
        StringBuilder out = new StringBuilder("{\"kind\":\"").append(kind).append('"');
        for (int i = 0; i < pairs.length; i += 2) {
            Object value = pairs[i + 1];
            out.append(",\"").append(pairs[i]).append("\":");
            out.append(value instanceof Number ? value.toString() : "\"" + value + "\"");
        }
        System.out.println(out.append('}'));
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        for (ApiKeys key : ApiKeys.values()) {
            print("api", "key", key.id, "name", key.name, "max", key.latestVersion(false));
        }
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 60_000;
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("acks", "all");
        try (KafkaProducer<String, String> producer =
                 new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            for (int i = 0; i < 3; i++) {
                producer.send(new ProducerRecord<>(topic, 0, base + i, "k" + i, "v" + i)).get();
            }
        }
        Properties a = new Properties();
        a.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(a)) {
            Map<String, OffsetSpec> specs = new LinkedHashMap<>();
            specs.put("latest", OffsetSpec.latest());
            specs.put("earliest", OffsetSpec.earliest());
            specs.put("maxTimestamp", OffsetSpec.maxTimestamp());
            specs.put("forTimestamp", OffsetSpec.forTimestamp(base + 1));
            specs.put("earliestPendingUpload", OffsetSpec.earliestPendingUpload());
            for (Map.Entry<String, OffsetSpec> spec : specs.entrySet()) {
                long offset = admin.listOffsets(Map.of(tp, spec.getValue())).partitionResult(tp).get().offset();
                print("admin-offset", "spec", spec.getKey(), "offset", offset);
            }
        }
        Properties c = new Properties();
        c.put("bootstrap.servers", bootstrap);
        c.put("group.id", "newer-versions");
        c.put("enable.auto.commit", "false");
        try (KafkaConsumer<String, String> consumer =
                 new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
            consumer.assign(List.of(tp));
            print("consumer-offsets", "end", consumer.endOffsets(Set.of(tp)).get(tp),
                  "at", consumer.offsetsForTimes(Map.of(tp, base + 2)).get(tp).offset());
            consumer.commitSync(Map.of(tp, new OffsetAndMetadata(2, "meta")));
            OffsetAndMetadata committed = consumer.committed(Set.of(tp)).get(tp);
            consumer.seek(tp, committed);
            String value = null;
            long deadline = System.currentTimeMillis() + 30_000;
            while (value == null && System.currentTimeMillis() < deadline) {
                var records = consumer.poll(Duration.ofMillis(200)).records(tp);
                value = records.isEmpty() ? null : records.get(0).value();
            }
            print("committed", "offset", committed.offset(), "metadata", committed.metadata(),
                  "next", value);
        }
        // a member of a consumer-protocol (KIP-848) group commits and fetches by topic id
        c.put("group.id", "newer-versions-848");
        c.put("group.protocol", "consumer");
        c.put("auto.offset.reset", "earliest");
        try (KafkaConsumer<String, String> consumer =
                 new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
            consumer.subscribe(List.of(topic));
            int seen = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (seen < 3 && System.currentTimeMillis() < deadline) {
                seen += consumer.poll(Duration.ofMillis(200)).count();
            }
            consumer.commitSync(Map.of(tp, new OffsetAndMetadata(3, "member")));
            OffsetAndMetadata committed = consumer.committed(Set.of(tp)).get(tp);
            print("member-committed", "seen", seen, "offset", committed.offset(),
                  "metadata", committed.metadata());
        }
    }
}
