package akfak.tests;

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.SubscriptionPattern;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * A member of {@code group=G} reading {@code topic=T} (or, with {@code pattern=RE}, the topics
 * the broker matches to the RE2 regex: KIP-848's SubscriptionPattern) until its stdin closes,
 * then leaving the group (close). Commits synchronously after every poll that returned records;
 * {@code config.KEY=VALUE} sets consumer properties (e.g. config.group.protocol=consumer).
 * <p>Prints {"kind":"assigned","partitions":[...],"topic_partitions":["t:p",...]} after every
 * change of its assignment (the whole set it owns; partitions: those of T),
 * {"kind":"record","topic":t,"partition":p,"offset":o,"value":v} per record, and
 * {"kind":"done","records":n} once it has left.
 */
public final class GroupMember {
    public static void main(String[] argv) {
        var options = Util.args(argv, "GroupMember BOOTSTRAP topic=T|pattern=RE group=G [config.KEY=VALUE ...]");
        String pattern = options.get("pattern");
        String topic = pattern == null ? Util.required(options, "topic") : options.getOrDefault("topic", "");
        var props = Util.clientProps(options);
        props.put("group.id", Util.required(options, "group"));
        props.put("enable.auto.commit", "false");
        props.put("auto.offset.reset", "earliest");
        AtomicBoolean stop = Util.stopWhenStdinCloses();  // make the member leave
        int records = 0;
        try (var consumer = new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer())) {
            TreeSet<String> owned = new TreeSet<>();
            Runnable report = () -> Util.emit("kind", "assigned", "partitions", owned.stream()
                .filter(tp -> tp.startsWith(topic + ":")).map(tp -> Integer.parseInt(tp.substring(topic.length() + 1)))
                .sorted().toList(), "topic_partitions", List.copyOf(owned));
            var listener = new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    if (!partitions.isEmpty()) {
                        consumer.commitSync();
                        partitions.forEach(tp -> owned.remove(tp.topic() + ":" + tp.partition()));
                        report.run();
                    }
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    partitions.forEach(tp -> owned.add(tp.topic() + ":" + tp.partition()));
                    report.run();
                }
            };
            if (pattern != null) {
                consumer.subscribe(new SubscriptionPattern(pattern), listener);
            } else {
                consumer.subscribe(List.of(topic), listener);
            }
            while (!stop.get()) {
                var polled = consumer.poll(Duration.ofMillis(100));
                for (ConsumerRecord<String, String> r : polled) {
                    Util.emit("kind", "record", "topic", r.topic(), "partition", r.partition(), "offset", r.offset(), "value", r.value());
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
