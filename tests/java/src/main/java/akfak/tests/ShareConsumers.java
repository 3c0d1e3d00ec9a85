package akfak.tests;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.FeatureUpdate;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.UpdateFeaturesOptions;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * {@code consumers} KafkaShareConsumers of one share group on {@code topic}, after an optional
 * setup: {@code setup=true} finalizes share.version=1, creates the topic (one partition) unless it
 * exists, sets the group's share.auto.offset.reset=earliest (and share.record.lock.duration.ms=
 * {@code lock-ms}) and produces {@code records} records in batches of {@code batch}.  Each
 * consumer acknowledges explicitly by {@code mode}:
 * <ul>
 * <li>accept: ACCEPT every record;</li>
 * <li>release: RELEASE every record (it comes back until the delivery limit archives it);</li>
 * <li>reject: REJECT every record;</li>
 * <li>stall: consumer 0 takes one poll's records and then neither acknowledges nor polls (its
 *     locks expire, or the broker dies); the others start after it and ACCEPT everything.</li>
 * <li>late: ACCEPT every record, but only {@code late-ms} after the poll that brought it (past
 *     its lock: the broker refuses the acknowledgement and the record comes back).</li>
 * </ul>
 * Prints {"kind":"record","consumer":c,"partition":p,"offset":o,"deliveryCount":n} per delivery (not
 * with {@code quiet=true}), {"kind":"ack-failed","consumer":c,"partition":p,"offsets":[...],"error":e}
 * for acknowledgements the broker did not take and {"kind":"done","deliveries":n,"firstMs":f,"spanMs":s} (f: from the start
 * to the first delivery, s: from the first delivery to the last) once {@code expect} deliveries were seen, or once
 * {@code idle-ms} passed without a delivery after at least one; exit 3 past {@code timeout-ms}.
 * With {@code hold=true} the consumers then stay (polling, or stalled) until stdin closes.
 */
public final class ShareConsumers {
    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv, "ShareConsumers BOOTSTRAP topic=T group=G "
            + "[setup=true records=N batch=B] [consumers=4] [mode=accept|release|reject|stall|late] [late-ms=MS] "
            + "[expect=N] [idle-ms=MS] [timeout-ms=MS] [hold=true] [quiet=true]");
        String topic = Util.required(options, "topic");
        String group = Util.required(options, "group");
        int consumers = Util.intOption(options, "consumers", 4);
        String mode = options.getOrDefault("mode", "accept");
        int expect = Util.intOption(options, "expect", Integer.MAX_VALUE);
        int idleMs = Util.intOption(options, "idle-ms", 3000);
        long deadline = System.currentTimeMillis() + Util.intOption(options, "timeout-ms", 60000);

        if (Boolean.parseBoolean(options.getOrDefault("setup", "false"))) {
            setup(options, topic, group);
        }

        AtomicInteger deliveries = new AtomicInteger();
        AtomicBoolean stop = new AtomicBoolean();
        CountDownLatch stalledLatch = new CountDownLatch(1);
        Map<Integer, Long> lastDelivery = new ConcurrentHashMap<>();
        Map<Integer, Long> firstDelivery = new ConcurrentHashMap<>();
        boolean quiet = Boolean.parseBoolean(options.getOrDefault("quiet", "false"));
        long started = System.currentTimeMillis();
        List<Thread> threads = new ArrayList<>();
        List<Throwable> failures = new ArrayList<>();
        for (int c = 0; c < consumers; c++) {
            final int id = c;
            Thread thread = new Thread(() -> {
                Properties props = Util.clientProps(options);
                props.put("group.id", group);
                props.put("client.id", "share-" + id);
                props.put("share.acknowledgement.mode", "explicit");
                props.put("key.deserializer", StringDeserializer.class.getName());
                props.put("value.deserializer", StringDeserializer.class.getName());
                boolean staller = mode.equals("stall") && id == 0;
                KafkaShareConsumer<String, String> consumer = new KafkaShareConsumer<>(props);
                consumer.setAcknowledgementCommitCallback((offsets, error) -> {
                    if (error != null) {
                        offsets.forEach((tp, acked) -> Util.emit("kind", "ack-failed", "consumer", id,
                            "partition", tp.partition(), "offsets", List.copyOf(acked), "error", error.toString()));
                    }
                });
                try {
                    if (mode.equals("stall") && id != 0) {
                        stalledLatch.await(30, TimeUnit.SECONDS);  // consumer 0 takes records first
                    }
                    consumer.subscribe(List.of(topic));
                    boolean stalled = false;
                    while (!stop.get()) {
                        if (stalled) {
                            Thread.sleep(50);
                            continue;
                        }
                        ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                        for (ConsumerRecord<String, String> record : records) {
                            if (!quiet) {
                                synchronized (System.out) {
                                    Util.emit("kind", "record", "consumer", id, "partition", record.partition(),
                                        "offset", record.offset(),
                                        "deliveryCount", (int) record.deliveryCount().orElse((short) -1));
                                }
                            }
                            deliveries.incrementAndGet();
                            long now = System.currentTimeMillis();
                            lastDelivery.put(0, now);
                            firstDelivery.putIfAbsent(0, now);
                            switch (mode) {
                                case "release" -> consumer.acknowledge(record, AcknowledgeType.RELEASE);
                                case "reject" -> consumer.acknowledge(record, AcknowledgeType.REJECT);
                                case "stall" -> {
                                    if (id != 0) {
                                        consumer.acknowledge(record, AcknowledgeType.ACCEPT);
                                    }
                                }
                                case "late" -> { }  // after the loop, once the lock has expired
                                default -> consumer.acknowledge(record, AcknowledgeType.ACCEPT);
                            }
                        }
                        if (mode.equals("late") && !records.isEmpty()) {
                            Thread.sleep(Util.intOption(options, "late-ms", 2000));
                            records.forEach(r -> consumer.acknowledge(r, AcknowledgeType.ACCEPT));
                        }
                        if (staller && !records.isEmpty()) {
                            stalled = true;  // holds its records' locks, acknowledges nothing
                            stalledLatch.countDown();
                            continue;
                        }
                        if (!records.isEmpty()) {
                            consumer.commitSync(Duration.ofSeconds(10));
                        }
                    }
                } catch (Throwable e) {
                    synchronized (failures) {
                        failures.add(e);
                    }
                } finally {
                    if (!staller) {  // closing would release the records; a dead client does not
                        consumer.close();
                    }
                }
            }, "share-consumer-" + id);
            thread.setDaemon(true);
            thread.start();
            threads.add(thread);
        }
        while (true) {
            Thread.sleep(50);
            Long last = lastDelivery.get(0);
            boolean idle = last != null && System.currentTimeMillis() - last > idleMs;
            if (deliveries.get() >= expect || idle || !failures.isEmpty()) {
                break;
            }
            if (System.currentTimeMillis() > deadline) {
                Util.emit("kind", "timeout", "deliveries", deliveries.get());
                System.out.flush();
                Runtime.getRuntime().halt(Util.TIMED_OUT);
            }
        }
        if (Boolean.parseBoolean(options.getOrDefault("hold", "false")) && failures.isEmpty()) {
            Util.emit("kind", "done", "deliveries", deliveries.get());
            System.out.flush();
            System.in.read();  // the consumers stay in the group until stdin closes
            Runtime.getRuntime().halt(0);
        }
        stop.set(true);
        for (Thread thread : threads) {
            if (!(mode.equals("stall") && thread.getName().endsWith("-0"))) {
                thread.join(15000);
            }
        }
        if (!failures.isEmpty()) {
            Util.emit("kind", "error", "message", String.valueOf(failures.get(0)));
            System.out.flush();
            Runtime.getRuntime().halt(1);
        }
        long first = firstDelivery.getOrDefault(0, started);
        Util.emit("kind", "done", "deliveries", deliveries.get(), "firstMs", first - started,
            "spanMs", lastDelivery.getOrDefault(0, first) - first);
        System.out.flush();
        Runtime.getRuntime().halt(0);  // a stalled consumer is left as a crashed client is
    }

    private static void setup(Map<String, String> options, String topic, String group) throws Exception {
        try (AdminClient admin = AdminClient.create(Util.clientProps(options))) {
            admin.updateFeatures(Map.of("share.version", new FeatureUpdate((short) 1, FeatureUpdate.UpgradeType.UPGRADE)),
                new UpdateFeaturesOptions()).all().get(30, TimeUnit.SECONDS);
            try {
                admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) {
                    throw e;
                }
            }
            ConfigResource resource = new ConfigResource(ConfigResource.Type.GROUP, group);
            List<AlterConfigOp> ops = new ArrayList<>(List.of(new AlterConfigOp(
                new ConfigEntry("share.auto.offset.reset", "earliest"), AlterConfigOp.OpType.SET)));
            if (options.containsKey("lock-ms")) {
                ops.add(new AlterConfigOp(new ConfigEntry("share.record.lock.duration.ms",
                    options.get("lock-ms")), AlterConfigOp.OpType.SET));
            }
            admin.incrementalAlterConfigs(Map.of(resource, ops)).all().get(30, TimeUnit.SECONDS);
        }
        int records = Util.intOption(options, "records", 0);
        int batch = Util.intOption(options, "batch", 10);
        Properties props = Util.producerProps(options);
        props.put("key.serializer", StringSerializer.class.getName());
        props.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < records; i++) {
                producer.send(new ProducerRecord<>(topic, "k" + i, "v" + i));
                if ((i + 1) % batch == 0) {
                    producer.flush();
                }
            }
            producer.flush();
        }
        Util.emit("kind", "setup", "records", records);
    }
}
