package akfak.tests;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Produces to {@code topic=T} until its stdin closes (the test kills brokers meanwhile), then
 * flushes and closes.
 * <ul>
 * <li>Without {@code transactional-id}: an idempotent acks=all producer writing values
 *     "NAME-SEQ" (zero-padded) round-robin over the partitions, at most {@code in-flight}
 *     unacknowledged; prints {"kind":"acked","partition":p,"offset":o,"value":v} per
 *     acknowledged record and {"kind":"failed","value":v,"error":e} per failed one.</li>
 * <li>With {@code transactional-id=ID}: transactions of {@code per-txn} records "TXN-I" over
 *     the partitions, one after another; prints {"kind":"committed","txn":n} once a commit
 *     returned, {"kind":"aborted","txn":n,"error":e} for one aborted on an error (a timed-out
 *     commit is retried, as the client allows).</li>
 * </ul>
 * Then {"kind":"done","acked":n,"failed":n} (or "committed"/"aborted" counts).  Delivery and
 * blocking timeouts are 2 minutes, so a failover (a lease, seconds) is waited out.
 */
public final class ClusterProducer {
    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv,
            "ClusterProducer BOOTSTRAP topic=T [name=N in-flight=N] [transactional-id=ID per-txn=K]");
        String topic = Util.required(options, "topic");
        String transactionalId = options.get("transactional-id");
        var props = Util.producerProps(options);
        props.put("delivery.timeout.ms", "120000");
        props.put("max.block.ms", "120000");
        props.put("request.timeout.ms", "10000");
        props.put("enable.idempotence", "true");
        if (transactionalId != null) {
            props.put("transactional.id", transactionalId);
            props.put("transaction.timeout.ms", "60000");
        }
        AtomicBoolean stop = Util.stopWhenStdinCloses();  // stop the producer
        try (var producer = new KafkaProducer<>(props, new StringSerializer(), new StringSerializer())) {
            int partitions = producer.partitionsFor(topic).size();
            if (transactionalId == null) {
                idempotent(producer, topic, partitions, options, stop);
            } else {
                transactions(producer, topic, partitions, Util.intOption(options, "per-txn", 6), stop);
            }
        } catch (Exception e) {
            Util.fail(e);
        }
    }

    private static void idempotent(KafkaProducer<String, String> producer, String topic, int partitions,
                                   Map<String, String> options, AtomicBoolean stop) {
        String name = options.getOrDefault("name", "j");
        Semaphore window = new Semaphore(Util.intOption(options, "in-flight", 200));
        AtomicInteger acked = new AtomicInteger();
        AtomicInteger failed = new AtomicInteger();
        for (int i = 0; !stop.get(); i++) {
            window.acquireUninterruptibly();
            String value = String.format("%s-%07d", name, i);
            producer.send(new ProducerRecord<>(topic, i % partitions, null, value), (metadata, error) -> {
                window.release();
                if (error == null) {
                    acked.incrementAndGet();
                    Util.emit("kind", "acked", "partition", metadata.partition(), "offset", metadata.offset(),
                              "value", value);
                } else {
                    failed.incrementAndGet();
                    Util.emit("kind", "failed", "value", value, "error", error.toString());
                }
            });
        }
        producer.flush();
        Util.emit("kind", "done", "acked", acked.get(), "failed", failed.get());
    }

    private static void transactions(KafkaProducer<String, String> producer, String topic, int partitions,
                                     int perTxn, AtomicBoolean stop) {
        producer.initTransactions();
        int committed = 0;
        int aborted = 0;
        for (int txn = 0; !stop.get(); txn++) {
            try {
                producer.beginTransaction();
                List<Future<RecordMetadata>> sent = new ArrayList<>();
                for (int i = 0; i < perTxn; i++) {
                    sent.add(producer.send(new ProducerRecord<>(topic, i % partitions, null, txn + "-" + i)));
                }
                commit(producer);
                committed++;
                Util.emit("kind", "committed", "txn", txn);
            } catch (ProducerFencedException e) {
                Util.fail(e);
            } catch (KafkaException e) {
                producer.abortTransaction();
                aborted++;
                Util.emit("kind", "aborted", "txn", txn, "error", e.toString());
            }
        }
        Util.emit("kind", "done", "committed", committed, "aborted", aborted);
    }

    /** commitTransaction, retried after a timeout (the client resumes the same commit). */
    private static void commit(KafkaProducer<String, String> producer) {
        for (int attempt = 0; ; attempt++) {
            try {
                producer.commitTransaction();
                return;
            } catch (TimeoutException e) {
                if (attempt >= 3) {
                    throw e;
                }
            }
        }
    }
}
