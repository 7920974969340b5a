// The Batch account: Entra ID tokens only on the data plane (no shared keys). Pools are auto pools
// that each job creates and deletes (shared/batch.py), so none is declared here, except the
// optional long-lived shared pool, created through ARM so that it can carry a managed identity
// and pull task images from the registry with it (AcrPull, modules/roles.bicep).
param location string
param tags object
param accountName string

@allowed([
  'BatchService'
  'UserSubscription'
])
param poolAllocationMode string
@description('UserSubscription mode keeps Batch secrets here (its access is granted in keyvault.bicep, deployed first).')
param keyVaultName string
param createSharedPool bool
param sharedPoolName string
param sharedPoolMaxNodes int
param poolVmSize string
param poolIdentityId string
param registryLoginServer string

var userSubscription = poolAllocationMode == 'UserSubscription'

resource vault 'Microsoft.KeyVault/vaults@2025-05-01' existing = {
  name: keyVaultName
}

resource account 'Microsoft.Batch/batchAccounts@2025-06-01' = {
  name: accountName
  location: location
  tags: tags
  properties: {
    poolAllocationMode: poolAllocationMode
    allowedAuthenticationModes: [
      'AAD'
    ]
    publicNetworkAccess: 'Enabled'
    keyVaultReference: userSubscription ? {
      id: vault.id
      url: vault.properties.vaultUri
    } : null
  }
}

// Scales with pending tasks, to zero when idle; the image in the job file is pulled with the
// pool's identity (the app may still pass the registry token per task: both work).
resource sharedPool 'Microsoft.Batch/batchAccounts/pools@2025-06-01' = if (createSharedPool) {
  parent: account
  name: sharedPoolName
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${poolIdentityId}': {}
    }
  }
  properties: {
    vmSize: poolVmSize
    taskSlotsPerNode: 1
    interNodeCommunication: 'Disabled'
    deploymentConfiguration: {
      virtualMachineConfiguration: {
        imageReference: {
          publisher: 'microsoft-dsvm'
          offer: 'ubuntu-hpc'
          sku: '2204'
          version: 'latest'
        }
        nodeAgentSkuId: 'batch.node.ubuntu 22.04'
        containerConfiguration: {
          type: 'DockerCompatible'
          containerRegistries: [
            {
              registryServer: registryLoginServer
              identityReference: {
                resourceId: poolIdentityId
              }
            }
          ]
        }
      }
    }
    scaleSettings: {
      autoScale: {
        evaluationInterval: 'PT5M'
        formula: '$sampled = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 5) > 0;\n$pending = $sampled ? max(0, $PendingTasks.GetSample(1)) : 0;\n$TargetDedicatedNodes = min(${sharedPoolMaxNodes}, $pending);\n$TargetLowPriorityNodes = 0;\n$NodeDeallocationOption = taskcompletion;'
      }
    }
  }
}

output name string = account.name
output id string = account.id
output accountUrl string = 'https://${account.properties.accountEndpoint}'
