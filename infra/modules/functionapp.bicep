// The function app on Flex Consumption (Python 3.11), as one user-assigned identity, with every
// app setting the code reads (shared/settings.py; the tie is tested in tests/infra). Flex
// Consumption runs blob triggers only from Event Grid, hence INTAKE_SOURCE=EventGrid.
// Telemetry is OpenTelemetry (host.json telemetryMode): the host and the Python worker each send
// to Application Insights with the app's identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING);
// PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY lets the worker send its own logs (shared/telemetry.py
// adds the run_id custom dimension) instead of the host forwarding them a second time.
param location string
param tags object
param planName string
param appName string
@description('The azd service this app hosts (azure.yaml).')
param serviceName string
param identityId string
param identityClientId string
param storageAccountName string
param blobEndpoint string
param deploymentContainer string
param applicationInsightsName string
param instanceMemoryMB int
param maximumInstanceCount int
param batchAccountUrl string
param keyVaultUrl string
param eventGridTopicEndpoint string
param registryServer string
param registryUsername string
param registryPasswordSecret string
param intakeContainer string
param dataContainer string
param resultsContainer string
param controlContainer string
param finalizeQueue string
param intakeQueue string
@description('Continuations of a submission in chunks (shared.submit)')
param submitQueue string
param workContainerPrefix string
param monitorSchedule string
param inputContainers string
param orphanMaxAgeHours int
param keepTaskOutputsHours int
param maxTasksPerRun int
param infraRetries int
param poolVmSize string
param poolMaxNodes int
param poolSlotsPerNode int

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-11-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-11-01' = {
  name: appName
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientCertEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Every setting the app reads, with the defaults docs and shared/settings.py document. Left out on
// purpose (identity instead of keys): AzureWebJobsStorage, BATCH_ACCOUNT_NAME, BATCH_ACCOUNT_KEY,
// EVENTGRID_TOPIC_KEY, MANAGED_IDENTITY_CLIENT_ID (AzureWebJobsStorage__clientId names the
// identity), REGISTRY_PASSWORD (Key Vault holds it).
resource appSettings 'Microsoft.Web/sites/config@2024-11-01' = {
  parent: app
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__accountName: storageAccountName
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true' // lower case: the exporter compares it exactly
    BATCH_ACCOUNT_URL: batchAccountUrl
    INTAKE_SOURCE: 'EventGrid'
    INTAKE_CONTAINER: intakeContainer
    DATA_CONTAINER: dataContainer
    RESULTS_CONTAINER: resultsContainer
    CONTROL_CONTAINER: controlContainer
    FINALIZE_QUEUE: finalizeQueue
    INTAKE_QUEUE: intakeQueue
    SUBMIT_QUEUE: submitQueue
    INTAKE_BUDGET_SECONDS: '240' // an intake hands the rest of a large run to a continuation after this
    FINALIZE_BUDGET_SECONDS: '240' // and finalize the rest of a large merge
    MONITOR_SCHEDULE: monitorSchedule
    MONITOR_TAIL_SECONDS: '15' // a tick watches runs in their last wave this long: finalize starts as they end
    WORK_CONTAINER_PREFIX: workContainerPrefix
    MAX_JOB_FILE_BYTES: '1048576'
    INPUT_CONTAINERS: inputContainers
    MAX_TASKS_PER_RUN: string(maxTasksPerRun)
    INFRA_RETRIES: string(infraRetries)
    UPLOAD_CONCURRENCY: '16'
    SUBMIT_CONCURRENCY: '4'
    POOL_VM_SIZE: poolVmSize
    POOL_MAX_NODES: string(poolMaxNodes)
    POOL_SLOTS_PER_NODE: string(poolSlotsPerNode)
    POOL_IMAGE_PUBLISHER: 'microsoft-dsvm'
    POOL_IMAGE_OFFER: 'ubuntu-hpc'
    POOL_IMAGE_SKU: '2204'
    POOL_NODE_AGENT_SKU: 'batch.node.ubuntu 22.04'
    POOL_GPU_IMAGE_PUBLISHER: 'microsoft-dsvm' // GPU (N-series) pools: NVIDIA drivers and container toolkit
    POOL_GPU_IMAGE_OFFER: 'ubuntu-hpc'
    POOL_GPU_IMAGE_SKU: '2204'
    POOL_GPU_NODE_AGENT_SKU: 'batch.node.ubuntu 22.04'
    SPOT_WAIT_MINUTES: '15'
    SPOT_PREEMPTION_THRESHOLD: '1'
    REGISTRY_SERVER: registryServer
    REGISTRY_USERNAME: registryUsername
    REGISTRY_PASSWORD_SECRET: registryPasswordSecret
    KEY_VAULT_URL: keyVaultUrl
    EVENTGRID_TOPIC_ENDPOINT: eventGridTopicEndpoint
    ORPHAN_MAX_AGE_HOURS: string(orphanMaxAgeHours)
    KEEP_TASK_OUTPUTS_HOURS: string(keepTaskOutputsHours)
  }
}

output name string = app.name
output url string = 'https://${app.properties.defaultHostName}'
