package akfak.tests;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.FeatureMetadata;
import org.apache.kafka.clients.admin.FeatureUpdate;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.UpdateFeaturesOptions;

/**
 * Cluster features and transactions through the Java AdminClient.
 * <ul>
 * <li>{@code describe=true} prints
 *     {"kind":"features","finalized":{name:level},"supported":{name:[min,max]},"epoch":e};</li>
 * <li>{@code update=NAME:LEVEL[:TYPE],...} (TYPE upgrade|safe|unsafe, default upgrade), with
 *     {@code validate-only=true}, prints {"kind":"updated"} or {"kind":"error",...};</li>
 * <li>{@code transaction=ID} prints {"kind":"transaction","state":s,"producerId":p,"epoch":e}.</li>
 * </ul>
 */
public final class Features {
    public static void main(String[] argv) throws Exception {
        Map<String, String> options = Util.args(argv,
            "Features BOOTSTRAP describe=true | update=NAME:LEVEL[:TYPE],... [validate-only=true] | transaction=ID");
        try (AdminClient admin = AdminClient.create(Util.clientProps(options))) {
            if (options.containsKey("update")) {
                Map<String, FeatureUpdate> updates = new LinkedHashMap<>();
                for (String spec : options.get("update").split(",")) {
                    String[] parts = spec.split(":");
                    FeatureUpdate.UpgradeType type = parts.length > 2
                        ? switch (parts[2]) {
                            case "safe" -> FeatureUpdate.UpgradeType.SAFE_DOWNGRADE;
                            case "unsafe" -> FeatureUpdate.UpgradeType.UNSAFE_DOWNGRADE;
                            default -> FeatureUpdate.UpgradeType.UPGRADE;
                        }
                        : FeatureUpdate.UpgradeType.UPGRADE;
                    updates.put(parts[0], new FeatureUpdate(Short.parseShort(parts[1]), type));
                }
                UpdateFeaturesOptions updateOptions = new UpdateFeaturesOptions()
                    .validateOnly(Boolean.parseBoolean(options.getOrDefault("validate-only", "false")));
                admin.updateFeatures(updates, updateOptions).all().get(30, TimeUnit.SECONDS);
                Util.emit("kind", "updated");
            }
            if (options.containsKey("describe")) {
                FeatureMetadata metadata = admin.describeFeatures().featureMetadata().get(30, TimeUnit.SECONDS);
                Map<String, Object> finalized = new LinkedHashMap<>();
                metadata.finalizedFeatures().forEach((name, range) -> finalized.put(name, (int) range.maxVersionLevel()));
                Map<String, Object> supported = new LinkedHashMap<>();
                metadata.supportedFeatures().forEach((name, range) ->
                    supported.put(name, List.of((int) range.minVersion(), (int) range.maxVersion())));
                Util.emit("kind", "features", "finalized", finalized, "supported", supported,
                    "epoch", metadata.finalizedFeaturesEpoch().orElse(-1L));
            }
            if (options.containsKey("transaction")) {
                String id = options.get("transaction");
                TransactionDescription description =
                    admin.describeTransactions(List.of(id)).description(id).get(30, TimeUnit.SECONDS);
                Util.emit("kind", "transaction", "state", description.state().toString(),
                    "producerId", description.producerId(), "epoch", (int) description.producerEpoch());
            }
        } catch (Exception e) {
            Util.fail(e);
        }
    }
}
