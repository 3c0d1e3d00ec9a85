package akfak.tests;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Sends {@code count} records in one batch to partition 0 of {@code topic}, every
 * {@code every}-th without a key, and prints each record's outcome:
 * {"kind":"sent","index":i,"offset":o} or {"kind":"failed","index":i,"error":class,"message":m}.
 */
public final class KeylessProducer {
    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv, "KeylessProducer BOOTSTRAP topic=T [count=N] [every=K]");
        String topic = Util.required(options, "topic");
        int count = Util.intOption(options, "count", 20);
        int every = Util.intOption(options, "every", 10);
        Properties props = Util.clientProps(options);
        props.put("key.serializer", StringSerializer.class.getName());
        props.put("value.serializer", StringSerializer.class.getName());
        props.put("linger.ms", "1000");
        props.put("enable.idempotence", "false");
        props.put("retries", "0");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                String key = i % every == 0 ? null : "k" + i;
                sent.add(producer.send(new ProducerRecord<>(topic, 0, key, "v" + i)));
            }
            producer.flush();
            for (int i = 0; i < count; i++) {
                try {
                    Util.emit("kind", "sent", "index", i, "offset", sent.get(i).get().offset());
                } catch (ExecutionException e) {
                    Util.emit("kind", "failed", "index", i, "error", e.getCause().getClass().getSimpleName(),
                              "message", String.valueOf(e.getCause().getMessage()));
                }
            }
        }
    }
}
