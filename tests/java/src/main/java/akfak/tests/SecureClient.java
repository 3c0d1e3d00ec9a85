package akfak.tests;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The client side of a secured listener (security settings as config.KEY=VALUE options, see
 * Util.clientProps): an admin call (DescribeCluster, CreateTopics), a produce and a consume in a
 * group.  {@code SecureClient BOOTSTRAP topic=T [records=N] [group=G] config.security.protocol=SSL ...}
 * prints {"kind":"cluster","nodes":["host:port",...]}, {"kind":"produced","count":N} and
 * {"kind":"consumed","count":N,"values":[...]}; a failure prints {"kind":"error",...} and exits 1.
 */
public final class SecureClient {
    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv,
            "SecureClient BOOTSTRAP topic=T [records=N] [group=G] [config.KEY=VALUE ...]");
        String topic = Util.required(options, "topic");
        int records = Util.intOption(options, "records", 10);
        String group = options.getOrDefault("group", "secure-" + topic);
        try {
            run(options, topic, records, group);
        } catch (Throwable e) {
            Util.fail(e);
        }
    }

    private static void run(Map<String, String> options, String topic, int records, String group)
            throws Exception {
        Properties adminProps = Util.clientProps(options);
        adminProps.put("request.timeout.ms", "15000");
        adminProps.put("default.api.timeout.ms", "30000");
        try (AdminClient admin = AdminClient.create(adminProps)) {
            DescribeClusterResult cluster = admin.describeCluster();
            List<String> nodes = new ArrayList<>();
            for (Node node : cluster.nodes().get()) {
                nodes.add(node.host() + ":" + node.port());
            }
            Util.emit("kind", "cluster", "nodes", nodes);
            try {
                admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) {
                    throw e;
                }
            }
        }
        Properties producerProps = Util.producerProps(options);
        producerProps.put("key.serializer", StringSerializer.class.getName());
        producerProps.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps)) {
            for (int i = 0; i < records; i++) {
                producer.send(new ProducerRecord<>(topic, "k" + i, "v" + i)).get();
            }
        }
        Util.emit("kind", "produced", "count", records);
        Properties consumerProps = Util.clientProps(options);
        consumerProps.put("group.id", group);
        consumerProps.put("auto.offset.reset", "earliest");
        consumerProps.put("key.deserializer", StringDeserializer.class.getName());
        consumerProps.put("value.deserializer", StringDeserializer.class.getName());
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(consumerProps)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60_000;
            while (values.size() < records && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(500))) {
                    values.add(record.value());
                }
            }
            consumer.commitSync();
        }
        Util.emit("kind", "consumed", "count", values.size(), "values", values);
        if (values.size() < records) {
            System.exit(Util.TIMED_OUT);
        }
    }
}
