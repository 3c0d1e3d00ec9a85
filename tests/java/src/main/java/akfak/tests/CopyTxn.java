package akfak.tests;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Consume-transform-produce, exactly once: a consumer in {@code group=G} reads {@code input=T}
 * (read_committed, no auto-commit); for each poll a transaction ({@code transactional-id=ID})
 * writes every record to {@code output=T} with its value upper-cased, sends the consumer's
 * positions with {@code sendOffsetsToTransaction} and commits. Stops once the offsets it
 * committed reach the input's end offsets (read at the start), or after {@code timeout-ms}.
 * <p>Prints {"kind":"txn","records":n,"offsets":{...}} per transaction, then
 * {"kind":"done","complete":bool,"copied":n,"transactions":n}. Exits 3 if incomplete.
 */
public final class CopyTxn {
    public static void main(String[] argv) {
        Map<String, String> options = Util.args(argv,
            "CopyTxn BOOTSTRAP input=T output=T group=G transactional-id=ID [timeout-ms=60000]");
        String input = Util.required(options, "input");
        String output = Util.required(options, "output");
        long deadline = System.currentTimeMillis() + Util.intOption(options, "timeout-ms", 60000);

        var consumerProps = Util.clientProps(options);
        consumerProps.put("group.id", Util.required(options, "group"));
        consumerProps.put("isolation.level", "read_committed");
        consumerProps.put("enable.auto.commit", "false");
        consumerProps.put("auto.offset.reset", "earliest");
        consumerProps.put("max.poll.records", "500");
        var producerProps = Util.producerProps(options);
        producerProps.put("transactional.id", Util.required(options, "transactional-id"));

        int copied = 0;
        int transactions = 0;
        boolean complete = false;
        try (var consumer = new KafkaConsumer<>(consumerProps, new StringDeserializer(), new StringDeserializer());
             var producer = new KafkaProducer<>(producerProps, new StringSerializer(), new StringSerializer())) {
            producer.initTransactions();
            List<TopicPartition> partitions = consumer.partitionsFor(input, Duration.ofSeconds(30)).stream()
                .map(p -> new TopicPartition(input, p.partition())).toList();
            Map<TopicPartition, Long> end = consumer.endOffsets(partitions, Duration.ofSeconds(30));
            Map<TopicPartition, Long> done = new HashMap<>();
            consumer.subscribe(List.of(input));
            while (!complete && System.currentTimeMillis() < deadline) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    continue;
                }
                producer.beginTransaction();
                for (ConsumerRecord<String, String> r : records) {
                    producer.send(new ProducerRecord<>(output, r.key(), r.value().toUpperCase()));
                }
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (TopicPartition tp : records.partitions()) {
                    offsets.put(tp, new OffsetAndMetadata(consumer.position(tp)));
                }
                producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                producer.commitTransaction();
                copied += records.count();
                transactions++;
                offsets.forEach((tp, om) -> done.put(tp, om.offset()));
                Util.emit("kind", "txn", "records", records.count(), "offsets", Util.byPartition(done));
                complete = partitions.stream().allMatch(tp -> done.getOrDefault(tp, 0L) >= end.get(tp));
            }
        } catch (Exception e) {
            Util.fail(e);
        }
        Util.emit("kind", "done", "complete", complete, "copied", copied, "transactions", transactions);
        System.exit(complete ? 0 : Util.TIMED_OUT);
    }
}
