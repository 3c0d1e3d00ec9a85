package akfak.tests;

import java.util.Map;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Zombie fencing: producer A opens a transaction on {@code topic=T} with {@code transactional-id=ID}
 * and sends a record; producer B, with the same id, calls initTransactions, which fences A
 * (and aborts A's open transaction). A then sends again and commits.
 * <p>Prints {"kind":"fenced","during":"send|commit","exception":class,"causes":[...]} for A and
 * {"kind":"second","partition":p,"offset":o} once B committed a record of its own; exits 0 only
 * if A was fenced (ProducerFencedException or InvalidProducerEpochException somewhere in the chain).
 */
public final class Fencing {
    public static void main(String[] argv) {
        Map<String, String> options = Util.args(argv, "Fencing BOOTSTRAP topic=T transactional-id=ID");
        String topic = Util.required(options, "topic");
        var props = Util.producerProps(options);
        props.put("transactional.id", Util.required(options, "transactional-id"));
        boolean fenced = false;
        try (var first = new KafkaProducer<>(props, new StringSerializer(), new StringSerializer());
             var second = new KafkaProducer<>(props, new StringSerializer(), new StringSerializer())) {
            first.initTransactions();
            first.beginTransaction();
            first.send(new ProducerRecord<>(topic, "first", "before-fencing")).get();

            second.initTransactions();

            String during = "send";
            try {
                first.send(new ProducerRecord<>(topic, "first", "after-fencing")).get();
                during = "commit";
                first.commitTransaction();
                Util.emit("kind", "not-fenced");
            } catch (Exception e) {
                var causes = Util.causes(e);
                fenced = causes.contains(ProducerFencedException.class.getName())
                    || causes.contains(InvalidProducerEpochException.class.getName());
                Util.emit("kind", "fenced", "during", during, "exception", e.getClass().getName(),
                          "message", String.valueOf(e.getMessage()), "causes", causes);
            }

            second.beginTransaction();
            var metadata = second.send(new ProducerRecord<>(topic, "second", "committed")).get();
            second.commitTransaction();
            Util.emit("kind", "second", "partition", metadata.partition(), "offset", metadata.offset());
        } catch (Exception e) {
            Util.fail(e);
        }
        System.exit(fenced ? 0 : 1);
    }
}
