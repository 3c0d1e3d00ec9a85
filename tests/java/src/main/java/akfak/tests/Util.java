package akfak.tests;

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

import org.apache.kafka.common.TopicPartition;

/**
 * What every program shares: {@code key=value} arguments after the bootstrap address, one JSON
 * object per stdout line, and the exit codes tests/jvm.py reads (0 done, 1 error, 2 usage,
 * 3 timed out before done).
 */
final class Util {
    static final int TIMED_OUT = 3;

    private Util() {}

    /** {@code Main BOOTSTRAP key=value ...}: the options, with "bootstrap" among them. */
    static Map<String, String> args(String[] argv, String usage) {
        if (argv.length < 1) {
            usage(usage);
        }
        Map<String, String> options = new LinkedHashMap<>();
        options.put("bootstrap", argv[0]);
        for (int i = 1; i < argv.length; i++) {
            int eq = argv[i].indexOf('=');
            if (eq < 1) {
                usage(usage);
            }
            options.put(argv[i].substring(0, eq), argv[i].substring(eq + 1));
        }
        return options;
    }

    static void usage(String usage) {
        System.err.println("usage: " + usage);
        System.exit(2);
    }

    static String required(Map<String, String> options, String name) {
        String value = options.get(name);
        if (value == null) {
            System.err.println("missing option " + name + "=...");
            System.exit(2);
        }
        return value;
    }

    static int intOption(Map<String, String> options, String name, int fallback) {
        String value = options.get(name);
        return value == null ? fallback : Integer.parseInt(value);
    }

    /** Properties every client starts from; an option {@code config.KEY=VALUE} sets client
     *  property KEY (e.g. config.security.protocol=SSL). */
    static Properties clientProps(Map<String, String> options) {
        Properties props = new Properties();
        props.put("bootstrap.servers", options.get("bootstrap"));
        props.put("client.id", "akfak-tests");
        options.forEach((key, value) -> {
            if (key.startsWith("config.")) {
                props.put(key.substring("config.".length()), value);
            }
        });
        return props;
    }

    /** A producer's properties: bounded waits, so a broker that never answers fails the program. */
    static Properties producerProps(Map<String, String> options) {
        Properties props = clientProps(options);
        props.put("acks", "all");
        props.put("linger.ms", "5");
        props.put("max.block.ms", "30000");
        props.put("request.timeout.ms", "15000");
        props.put("delivery.timeout.ms", "30000");
        return props;
    }

    /** Prints one JSON object, made of alternating keys and values, as a line of its own. */
    /** A flag that turns true once stdin closes: how a test stops a program in the background. */
    static java.util.concurrent.atomic.AtomicBoolean stopWhenStdinCloses() {
        var stop = new java.util.concurrent.atomic.AtomicBoolean();
        Thread watcher = new Thread(() -> {
            try {
                while (System.in.read() >= 0) {
                    // until the test closes stdin
                }
            } catch (java.io.IOException e) {
                // closed
            }
            stop.set(true);
        });
        watcher.setDaemon(true);
        watcher.start();
        return stop;
    }

    static void emit(Object... keysAndValues) {
        Map<String, Object> object = new LinkedHashMap<>();
        for (int i = 0; i < keysAndValues.length; i += 2) {
            object.put((String) keysAndValues[i], keysAndValues[i + 1]);
        }
        StringBuilder out = new StringBuilder();
        json(out, object);
        synchronized (System.out) {
            System.out.println(out);
            System.out.flush();
        }
    }

    /** Partition number to value, for JSON. */
    static <V> Map<String, V> byPartition(Map<TopicPartition, V> map) {
        Map<String, V> out = new TreeMap<>((a, b) -> Integer.parseInt(a) - Integer.parseInt(b));
        map.forEach((tp, v) -> out.put(Integer.toString(tp.partition()), v));
        return out;
    }

    /** The class names of an exception and of its causes, outermost first. */
    static java.util.List<String> causes(Throwable error) {
        java.util.List<String> names = new java.util.ArrayList<>();
        for (Throwable t = error; t != null && names.size() < 10; t = t.getCause()) {
            names.add(t.getClass().getName());
        }
        return names;
    }

    /** Reports an unexpected failure and exits 1. */
    static void fail(Throwable error) {
        emit("kind", "error", "exception", error.getClass().getName(), "message", String.valueOf(error.getMessage()),
             "causes", causes(error));
        error.printStackTrace();
        System.exit(1);
    }

    private static void json(StringBuilder out, Object value) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof Number || value instanceof Boolean) {
            out.append(value);
        } else if (value instanceof Map<?, ?> map) {
            out.append('{');
            String sep = "";
            for (Map.Entry<?, ?> e : map.entrySet()) {
                out.append(sep);
                json(out, String.valueOf(e.getKey()));
                out.append(':');
                json(out, e.getValue());
                sep = ",";
            }
            out.append('}');
        } else if (value instanceof Collection<?> list) {
            out.append('[');
            String sep = "";
            for (Object item : list) {
                out.append(sep);
                json(out, item);
                sep = ",";
            }
            out.append(']');
        } else {
            out.append('"');
            for (char c : value.toString().toCharArray()) {
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    default -> {
                        if (c < 0x20) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                    }
                }
            }
            out.append('"');
        }
    }
}
