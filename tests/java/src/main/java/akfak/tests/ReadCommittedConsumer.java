package akfak.tests;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Assigns every partition of {@code topic=T} (no group), reads from the beginning with
 * {@code isolation=read_committed|read_uncommitted} until its positions reach the end offsets it
 * saw at the start (for read_committed, the last stable offsets), or {@code timeout-ms} passes.
 * <p>Prints {"kind":"record","partition":p,"offset":o,"key":k,"value":v} per record, then
 * {"kind":"done","complete":bool,"end":{"0":n,...},"positions":{...}}. Exits 3 if incomplete.
 */
public final class ReadCommittedConsumer {
    public static void main(String[] argv) {
        Map<String, String> options = Util.args(argv,
            "ReadCommittedConsumer BOOTSTRAP topic=T [isolation=read_committed] [timeout-ms=30000]");
        String topic = Util.required(options, "topic");
        long deadline = System.currentTimeMillis() + Util.intOption(options, "timeout-ms", 30000);
        var props = Util.clientProps(options);
        props.put("isolation.level", options.getOrDefault("isolation", "read_committed"));
        props.put("enable.auto.commit", "false");
        props.put("auto.offset.reset", "earliest");
        boolean complete = false;
        Map<TopicPartition, Long> end = Map.of();
        Map<TopicPartition, Long> positions = new HashMap<>();
        try (var consumer = new KafkaConsumer<>(props, new StringDeserializer(), new StringDeserializer())) {
            List<TopicPartition> partitions = consumer.partitionsFor(topic, Duration.ofSeconds(30)).stream()
                .map(p -> new TopicPartition(topic, p.partition())).toList();
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            end = consumer.endOffsets(partitions, Duration.ofSeconds(30));
            while (System.currentTimeMillis() < deadline) {
                for (TopicPartition tp : partitions) {
                    positions.put(tp, consumer.position(tp, Duration.ofSeconds(30)));
                }
                Map<TopicPartition, Long> endOffsets = end;
                complete = partitions.stream().allMatch(tp -> positions.get(tp) >= endOffsets.get(tp));
                if (complete) {
                    break;
                }
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    Util.emit("kind", "record", "partition", r.partition(), "offset", r.offset(), "key", r.key(),
                              "value", r.value());
                }
            }
        } catch (Exception e) {
            Util.fail(e);
        }
        Util.emit("kind", "done", "complete", complete, "end", Util.byPartition(end),
                  "positions", Util.byPartition(positions));
        System.exit(complete ? 0 : Util.TIMED_OUT);
    }
}
