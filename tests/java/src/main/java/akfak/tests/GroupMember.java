package akfak.tests;

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * A member of {@code group=G} reading {@code topic=T} until its stdin closes, then leaving the
 * group (close). Commits synchronously after every poll that returned records; {@code
 * config.KEY=VALUE} sets consumer properties (e.g. config.group.protocol=consumer).
 * <p>Prints {"kind":"assigned","partitions":[...]} after every change of its assignment (the
 * whole set it owns), {"kind":"record","partition":p,"offset":o,"value":v} per record, and
 * {"kind":"done","records":n} once it has left.
 */
public final class GroupMember {
    public static void main(String[] argv) {
        var options = Util.args(argv, "GroupMember BOOTSTRAP topic=T group=G [config.KEY=VALUE ...]");
        String topic = Util.required(options, "topic");
        var props = Util.clientProps(options);
        props.put("group.id", Util.required(options, "group"));
        props.put("enable.auto.commit", "false");
        props.put("auto.offset.reset", "earliest");
        AtomicBoolean stop = Util.stopWhenStdinCloses();  // make the member leave
        int records = 0;
        try (var consumer = new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer())) {
            TreeSet<Integer> owned = new TreeSet<>();
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    if (!partitions.isEmpty()) {
                        consumer.commitSync();
                        partitions.forEach(tp -> owned.remove(tp.partition()));
                        Util.emit("kind", "assigned", "partitions", List.copyOf(owned));
                    }
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    partitions.forEach(tp -> owned.add(tp.partition()));
                    Util.emit("kind", "assigned", "partitions", List.copyOf(owned));
                }
            });
            while (!stop.get()) {
                var polled = consumer.poll(Duration.ofMillis(100));
                for (ConsumerRecord<String, String> r : polled) {
                    Util.emit("kind", "record", "partition", r.partition(), "offset", r.offset(), "value", r.value());
                    records++;
                }
                if (!polled.isEmpty()) {
                    consumer.commitSync();
                }
            }
        } catch (Exception e) {
            Util.fail(e);
        }
        Util.emit("kind", "done", "records", records);
    }
}
