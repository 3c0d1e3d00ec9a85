package akfak.tests;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Produces {@code records=N} records to {@code topic=T}: record i has key "key-i" and value
 * "value-i" and goes to partition i % partitions, or with {@code keys=K} key "key-(i % K)" and
 * the default (key hash) partitioner.
 * <p>With {@code transactional-id=ID}, in transactions of {@code per-txn=K} records, each
 * committed or aborted by the next entry of {@code outcomes=commit,abort,...} (cycled).
 * Without, a plain (idempotent, acks=all) producer.
 * <p>Prints a line per record, once its transaction ended:
 * {"kind":"record","partition":p,"offset":o,"key":k,"value":v,"txn":t,"outcome":"commit|abort|none"}
 * then {"kind":"done","committed":n,"aborted":n,"transactions":n}.
 */
public final class TxnProducer {
    public static void main(String[] argv) {
        Map<String, String> options = Util.args(argv,
            "TxnProducer BOOTSTRAP topic=T records=N [keys=K] [transactional-id=ID per-txn=K outcomes=commit,abort]");
        String topic = Util.required(options, "topic");
        int records = Util.intOption(options, "records", 100);
        int keys = Util.intOption(options, "keys", 0);
        String transactionalId = options.get("transactional-id");
        int perTxn = transactionalId == null ? records : Util.intOption(options, "per-txn", 10);
        String[] outcomes = options.getOrDefault("outcomes", "commit").split(",");

        var props = Util.producerProps(options);
        if (transactionalId != null) {
            props.put("transactional.id", transactionalId);
            props.put("transaction.timeout.ms", "60000");
        }
        int committed = 0;
        int aborted = 0;
        int transactions = 0;
        try (var producer = new KafkaProducer<>(props, new StringSerializer(), new StringSerializer())) {
            int partitions = producer.partitionsFor(topic).size();
            if (transactionalId != null) {
                producer.initTransactions();
            }
            for (int start = 0; start < records; start += perTxn, transactions++) {
                String outcome = transactionalId == null ? "none" : outcomes[transactions % outcomes.length];
                if (transactionalId != null) {
                    producer.beginTransaction();
                }
                List<Future<RecordMetadata>> sent = new ArrayList<>();
                List<ProducerRecord<String, String>> batch = new ArrayList<>();
                for (int i = start; i < Math.min(records, start + perTxn); i++) {
                    var record = keys > 0
                        ? new ProducerRecord<>(topic, "key-" + (i % keys), "value-" + i)
                        : new ProducerRecord<>(topic, i % partitions, "key-" + i, "value-" + i);
                    batch.add(record);
                    sent.add(producer.send(record));
                }
                producer.flush();
                if (transactionalId == null) {
                    committed += batch.size();
                } else if (outcome.equals("commit")) {
                    producer.commitTransaction();
                    committed += batch.size();
                } else if (outcome.equals("abort")) {
                    producer.abortTransaction();
                    aborted += batch.size();
                } else {
                    Util.usage("outcomes are commit or abort, not " + outcome);
                }
                for (int i = 0; i < batch.size(); i++) {
                    RecordMetadata metadata = sent.get(i).get();
                    Util.emit("kind", "record", "partition", metadata.partition(), "offset", metadata.offset(),
                              "key", batch.get(i).key(), "value", batch.get(i).value(), "txn", transactions,
                              "outcome", outcome);
                }
            }
        } catch (Exception e) {
            Util.fail(e);
        }
        Util.emit("kind", "done", "committed", committed, "aborted", aborted, "transactions", transactions);
    }
}
