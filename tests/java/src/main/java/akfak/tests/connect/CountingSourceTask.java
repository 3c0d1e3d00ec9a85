package akfak.tests.connect;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;

/** The task of {@link CountingSourceConnector}. */
public final class CountingSourceTask extends SourceTask {
    private Map<String, String> partition;
    private String topic;
    private long records;
    private int batch;
    private long pollMs;
    private long next;

    @Override
    public void start(Map<String, String> props) {
        AbstractConfig config = new AbstractConfig(CountingSourceConnector.CONFIG, props);
        topic = config.getString("topic");
        records = config.getLong("records");
        batch = config.getInt("batch");
        pollMs = config.getLong("poll.ms");
        partition = Map.of("counter", props.getOrDefault("name", "counter"));
        Map<String, Object> stored = context.offsetStorageReader().offset(partition);
        next = stored == null ? 0 : ((Number) stored.get("next")).longValue();
    }

    @Override
    public List<SourceRecord> poll() throws InterruptedException {
        Thread.sleep(next < records ? pollMs : 200);
        List<SourceRecord> out = new ArrayList<>();
        for (; next < records && out.size() < batch; next++) {
            out.add(new SourceRecord(partition, Map.of("next", next + 1), topic, null,
                                     Schema.STRING_SCHEMA, "key-" + next, Schema.STRING_SCHEMA, "record-" + next));
        }
        return out.isEmpty() ? null : out;
    }

    @Override
    public void stop() {}

    @Override
    public String version() {
        return "1.0";
    }
}
