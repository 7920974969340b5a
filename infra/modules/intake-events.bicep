// The Event Grid subscription that delivers the intake container's BlobCreated events to the
// blob extension of the deployed function app. Deployed by the postdeploy hook
// (infra/hooks/azd_hooks.py), not by main.bicep: the webhook's key (the blobs_extension system
// key) exists only once the code has been deployed and the host has started. A deployment is a
// PUT, so running it again with the same values changes nothing.
param systemTopicName string
param functionAppHostName string
param intakeContainer string

@description('Name of the blob-triggered function (the blob extension routes the event to it).')
param functionName string = 'intake'

@secure()
@description('The function app\'s blobs_extension system key.')
param blobsExtensionKey string

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

resource intakeSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: 'batchdrop-intake'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionAppHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${intakeContainer}/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output subscriptionName string = intakeSubscription.name
