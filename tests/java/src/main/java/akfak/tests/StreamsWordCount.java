package akfak.tests;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;

/**
 * A Kafka Streams word count, to be stopped and restarted mid-stream:
 * {@code StreamsWordCount BOOTSTRAP application-id=A input=T output=T state-dir=D lines=N
 * [guarantee=exactly_once_v2|at_least_once] [produce=PARTITIONS produce-lines=FROM-TO] [halt-after=K]
 * [timeout-ms=N]}.
 * <p>Line i of the input is "w(i%50) w(i%20) w(i%7)" (key "line-i"). With {@code produce=P} the
 * program first creates the input and output topics (P partitions) if they are missing and
 * writes lines FROM to TO-1.
 * The topology splits lines into words, re-keys them by word (a repartition topic), counts them
 * in a KTable (store "counts", changelog A-counts-changelog) and writes each count, as a decimal
 * string, to the output. The Streams client is a static group member (group.instance.id = A), so
 * that a restart takes its predecessor's place at once.
 * <p>With {@code halt-after=K} the JVM halts (no close, no commit: a crash) once the committed
 * output counts K words, printing {"kind":"halted","words":W,"lines":L} (L: the lines the
 * topology had read by then). Otherwise it reads the output
 * read_committed until every word's latest count reaches what lines 0 to N-1 hold and the group's
 * committed input offsets are at the input's end, then closes the client and reads the changelog;
 * it prints {"kind":"done","complete":bool,"restored":R,"history":{word:[counts...]},
 * "changelog":{word:latest}}, R being the records restored into the store at start. Exits 3 if
 * incomplete by timeout-ms, 1 if the Streams client failed.
 */
public final class StreamsWordCount {
    private static final long TIMEOUT_S = 30;

    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv, "StreamsWordCount BOOTSTRAP application-id=A input=T output=T "
            + "state-dir=D lines=N [guarantee=G] [produce=PARTITIONS produce-lines=FROM-TO] [halt-after=K] [timeout-ms=N]");
        String app = Util.required(options, "application-id");
        String input = Util.required(options, "input");
        String output = Util.required(options, "output");
        int lines = Integer.parseInt(Util.required(options, "lines"));
        long haltAfter = Util.intOption(options, "halt-after", -1);
        long deadline = System.currentTimeMillis() + Util.intOption(options, "timeout-ms", 90000);
        Map<String, Long> expected = new TreeMap<>();
        for (int i = 0; i < lines; i++) {
            for (String word : line(i).split(" ")) {
                expected.merge(word, 1L, Long::sum);
            }
        }

        try (AdminClient admin = AdminClient.create(Util.clientProps(options))) {
            if (options.containsKey("produce")) {
                String[] range = Util.required(options, "produce-lines").split("-");
                produce(admin, options, input, output, Integer.parseInt(range[0]), Integer.parseInt(range[1]));
            }

            var props = Util.clientProps(options);
            props.remove("client.id");
            props.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
            props.put(StreamsConfig.STATE_DIR_CONFIG, Util.required(options, "state-dir"));
            props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                      options.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2));
            props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
            props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
            props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
            props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
            props.put(StreamsConfig.mainConsumerPrefix("group.instance.id"), app);
            // small polls, so that a halt falls between commits with work in flight
            props.put(StreamsConfig.consumerPrefix("max.poll.records"), 100);

            AtomicLong seen = new AtomicLong();
            StreamsBuilder builder = new StreamsBuilder();
            builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .peek((key, value) -> seen.incrementAndGet())
                .flatMapValues(value -> Arrays.asList(value.split(" ")))
                .groupBy((key, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                .count(Materialized.as("counts"))
                .toStream()
                .mapValues(count -> Long.toString(count))
                .to(output, Produced.with(Serdes.String(), Serdes.String()));

            AtomicLong restored = new AtomicLong();
            Map<String, List<Long>> history = new TreeMap<>();
            boolean complete = false;
            try (KafkaStreams streams = new KafkaStreams(builder.build(), props)) {
                streams.setStateListener((now, before) -> Util.emit("kind", "state", "state", now.toString()));
                streams.setGlobalStateRestoreListener(new StateRestoreListener() {
                    @Override
                    public void onRestoreStart(TopicPartition tp, String store, long start, long end) {}

                    @Override
                    public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long count) {
                        restored.addAndGet(count);
                    }

                    @Override
                    public void onRestoreEnd(TopicPartition tp, String store, long total) {}
                });
                streams.setUncaughtExceptionHandler(error -> {
                    Util.emit("kind", "error", "exception", error.getClass().getName(),
                              "message", String.valueOf(error.getMessage()), "causes", Util.causes(error));
                    return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
                });
                streams.start();

                long drainUntil = Long.MAX_VALUE;
                long nextOffsetsCheck = 0;
                try (var consumer = readCommitted(options, new StringDeserializer())) {
                    assignAll(consumer, output);
                    while (System.currentTimeMillis() < Math.min(deadline, drainUntil)
                           && streams.state().isRunningOrRebalancing()) {
                        for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                            history.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(Long.parseLong(r.value()));
                        }
                        long counted = history.values().stream().mapToLong(c -> c.get(c.size() - 1)).sum();
                        if (haltAfter > 0 && counted >= haltAfter) {
                            Util.emit("kind", "halted", "words", counted, "lines", seen.get());
                            Runtime.getRuntime().halt(0);
                        }
                        long now = System.currentTimeMillis();
                        if (!complete && now >= nextOffsetsCheck && reached(history, expected)) {
                            nextOffsetsCheck = now + 500;
                            complete = inputCommitted(admin, app, input);
                            // a last look at the output: anything more would be counted twice
                            drainUntil = complete ? now + 1000 : drainUntil;
                        }
                    }
                }
                boolean failed = !complete && !streams.state().isRunningOrRebalancing();
                streams.close(Duration.ofSeconds(30));
                Map<String, Long> changelog = new TreeMap<>();
                try (var consumer = readCommitted(options, new LongDeserializer())) {
                    assignAll(consumer, app + "-counts-changelog");
                    var end = consumer.endOffsets(consumer.assignment());
                    while (end.entrySet().stream().anyMatch(e -> consumer.position(e.getKey()) < e.getValue())
                           && System.currentTimeMillis() < deadline + 30000) {
                        for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(200))) {
                            changelog.put(r.key(), r.value());
                        }
                    }
                }
                Util.emit("kind", "done", "complete", complete, "restored", restored.get(), "history", history,
                          "changelog", changelog);
                System.exit(complete ? 0 : failed ? 1 : Util.TIMED_OUT);
            }
        }
    }

    static String line(int i) {
        return "w" + (i % 50) + " w" + (i % 20) + " w" + (i % 7);
    }

    private static void produce(AdminClient admin, Map<String, String> options, String input, String output,
                                int from, int to) throws Exception {
        int partitions = Integer.parseInt(options.get("produce"));
        for (String topic : List.of(input, output)) {
            try {
                admin.createTopics(List.of(new NewTopic(topic, Optional.of(partitions), Optional.of((short) 1))))
                    .all().get(TIMEOUT_S, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) {
                    throw e;
                }
            }
        }
        try (var producer = new KafkaProducer<>(Util.producerProps(options), new StringSerializer(),
                                                new StringSerializer())) {
            for (int i = from; i < to; i++) {
                producer.send(new ProducerRecord<>(input, "line-" + i, line(i)));
            }
            producer.flush();
        }
        Util.emit("kind", "produced", "lines", to - from);
    }

    private static <V> KafkaConsumer<String, V> readCommitted(Map<String, String> options, Deserializer<V> values) {
        var props = Util.clientProps(options);
        props.put("isolation.level", "read_committed");
        props.put("auto.offset.reset", "earliest");
        return new KafkaConsumer<>(props, new StringDeserializer(), values);
    }

    private static void assignAll(KafkaConsumer<?, ?> consumer, String topic) {
        consumer.assign(consumer.partitionsFor(topic, Duration.ofSeconds(TIMEOUT_S)).stream()
            .map(p -> new TopicPartition(topic, p.partition())).toList());
        consumer.seekToBeginning(consumer.assignment());
    }

    private static boolean reached(Map<String, List<Long>> history, Map<String, Long> expected) {
        return expected.entrySet().stream().allMatch(e -> {
            List<Long> counts = history.get(e.getKey());
            return counts != null && counts.get(counts.size() - 1) >= e.getValue();
        });
    }

    /** Whether the application's committed offsets on the input are at its end. */
    private static boolean inputCommitted(AdminClient admin, String app, String input) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(app)
            .partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS);
        var partitions = admin.describeTopics(Set.of(input)).allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS)
            .get(input).partitions();
        Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
        partitions.forEach(p -> latest.put(new TopicPartition(input, p.partition()), OffsetSpec.latest()));
        var end = admin.listOffsets(latest).all().get(TIMEOUT_S, TimeUnit.SECONDS);
        return end.entrySet().stream().allMatch(e -> {
            OffsetAndMetadata offset = committed.get(e.getKey());
            return offset != null && offset.offset() == e.getValue().offset();
        });
    }
}
