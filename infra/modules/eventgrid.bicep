// Event Grid: the storage account's system topic, whose BlobCreated events feed the intake blob
// trigger (Flex Consumption runs blob triggers only from Event Grid; the subscription itself is
// created by the postdeploy hook with intake-events.bicep, since it needs the webhook key of the
// deployed code), and the custom topic of batchdrop's lifecycle events (CloudEvents
// batchdrop.run.*), which takes Entra ID tokens only: the app publishes with EventGrid Data Sender.
param location string
param tags object
param storageAccountName string
param systemTopicName string
param runsTopicName string

resource storage 'Microsoft.Storage/storageAccounts@2025-06-01' existing = {
  name: storageAccountName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: location
  tags: tags
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource runsTopic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: runsTopicName
  location: location
  tags: tags
  // for subscribers that want delivery with a managed identity (it holds no role here)
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output systemTopicName string = systemTopic.name
output runsTopicName string = runsTopic.name
output runsTopicEndpoint string = runsTopic.properties.endpoint
