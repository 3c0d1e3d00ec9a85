package akfak.tests.connect;

import java.util.List;
import java.util.Map;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.source.SourceConnector;

/**
 * A source connector (one task) that writes records 0 to {@code records}-1 to {@code topic}:
 * key "key-i", value "record-i", {@code batch} records a poll, {@code poll.ms} apart. Its source
 * offset is {"next": i+1} under the source partition {"counter": connector name}, so that a task
 * started again goes on from the offset the worker stored.
 */
public final class CountingSourceConnector extends SourceConnector {
    static final ConfigDef CONFIG = new ConfigDef()
        .define("topic", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "where the records go")
        .define("records", ConfigDef.Type.LONG, ConfigDef.Importance.HIGH, "how many records in all")
        .define("batch", ConfigDef.Type.INT, 50, ConfigDef.Importance.LOW, "records a poll")
        .define("poll.ms", ConfigDef.Type.LONG, 20L, ConfigDef.Importance.LOW, "the pause before a poll");

    private Map<String, String> props;

    @Override
    public void start(Map<String, String> props) {
        CONFIG.parse(props);  // a bad config fails the connector here, as Connect expects
        this.props = props;
    }

    @Override
    public Class<? extends Task> taskClass() {
        return CountingSourceTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        return List.of(props);
    }

    @Override
    public void stop() {}

    @Override
    public ConfigDef config() {
        return CONFIG;
    }

    @Override
    public String version() {
        return "1.0";
    }
}
