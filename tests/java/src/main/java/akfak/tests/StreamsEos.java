package akfak.tests;

import java.time.Duration;
import java.util.Map;
import java.util.TreeMap;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * A Kafka Streams app with processing.guarantee=exactly_once_v2 ({@code guarantee=at_least_once}
 * to compare), {@code application-id=A} and {@code state-dir=D}: counts the records of {@code input=T} per key in a KTable (store
 * "counts", so a changelog topic A-counts-changelog) and writes each count, as a decimal string,
 * to {@code output=T}.
 * <p>Meanwhile it reads the output read_committed; it stops once the latest counts add up to
 * {@code expect=N}, or after {@code timeout-ms}. Prints {"kind":"state","state":s} on state
 * changes and {"kind":"done","complete":bool,"counts":{key:n,...}}. Exits 3 if incomplete, 1 if
 * the Streams client failed.
 */
public final class StreamsEos {
    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv,
            "StreamsEos BOOTSTRAP application-id=A input=T output=T state-dir=D expect=N [guarantee=G] [timeout-ms=N]");
        String input = Util.required(options, "input");
        String output = Util.required(options, "output");
        long expect = Long.parseLong(Util.required(options, "expect"));
        long deadline = System.currentTimeMillis() + Util.intOption(options, "timeout-ms", 90000);

        var props = Util.clientProps(options);
        props.remove("client.id");
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, Util.required(options, "application-id"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, Util.required(options, "state-dir"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                  options.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2));
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
            .groupByKey()
            .count(Materialized.as("counts"))
            .toStream()
            .mapValues(count -> Long.toString(count))
            .to(output, Produced.with(Serdes.String(), Serdes.String()));

        Map<String, Long> counts = new TreeMap<>();
        boolean complete = false;
        try (KafkaStreams streams = new KafkaStreams(builder.build(), props)) {
            streams.setStateListener((now, before) -> Util.emit("kind", "state", "state", now.toString()));
            streams.setUncaughtExceptionHandler(error -> {
                Util.emit("kind", "error", "exception", error.getClass().getName(),
                          "message", String.valueOf(error.getMessage()), "causes", Util.causes(error));
                return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            streams.start();

            var consumerProps = Util.clientProps(options);
            consumerProps.put("isolation.level", "read_committed");
            consumerProps.put("auto.offset.reset", "earliest");
            try (var consumer = new KafkaConsumer<>(consumerProps, new StringDeserializer(), new StringDeserializer())) {
                consumer.assign(consumer.partitionsFor(output, Duration.ofSeconds(30)).stream()
                    .map(p -> new TopicPartition(output, p.partition())).toList());
                consumer.seekToBeginning(consumer.assignment());
                while (!complete && System.currentTimeMillis() < deadline && streams.state().isRunningOrRebalancing()) {
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                        counts.put(r.key(), Long.parseLong(r.value()));
                    }
                    complete = counts.values().stream().mapToLong(Long::longValue).sum() == expect;
                }
            }
            boolean failed = !complete && !streams.state().isRunningOrRebalancing();
            streams.close(Duration.ofSeconds(30));
            Util.emit("kind", "done", "complete", complete, "counts", counts);
            System.exit(complete ? 0 : failed ? 1 : Util.TIMED_OUT);
        }
    }
}
